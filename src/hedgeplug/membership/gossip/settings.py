"""Options of the `gossip` membership and the settings the protocol reads.

Three profiles set every timing at once, after memberlist's LAN, WAN and
local configurations; any single timing can be overridden in [membership].
`resolve` turns options into the concrete `Settings` the protocol reads.
"""

from __future__ import annotations

from typing import Any

import attrs

from hedgeplug.plugin import Duration, Size, at_least, positive

from .queue import retransmit_limit
from .suspicion import suspicion_bounds


@attrs.frozen
class Settings:
    """Every timing and limit of the protocol, resolved from a profile and overrides."""

    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    suspicion_mult: int
    suspicion_max_timeout_mult: int
    confirmed_suspicion: float
    awareness_max_multiplier: int
    gossip_interval: float
    gossip_nodes: int
    retransmit_mult: int
    push_pull_interval: float
    push_pull_timeout: float
    anchor_interval: float
    heal_after: float
    dead_retention: float
    leave_wait: float
    packet_budget: int
    seeds: tuple[str, ...] = ()
    heal: bool = True
    anchor_join: bool = True


_COMMON = {"suspicion_max_timeout_mult": 6, "awareness_max_multiplier": 8, "packet_budget": 1200}

PROFILES: dict[str, dict[str, Any]] = {
    "lan": _COMMON
    | {
        "probe_interval": 1.0,
        "probe_timeout": 0.5,
        "indirect_checks": 3,
        "suspicion_mult": 4,
        "confirmed_suspicion": 2.0,
        "gossip_interval": 0.2,
        "gossip_nodes": 3,
        "retransmit_mult": 4,
        "push_pull_interval": 30.0,
        "push_pull_timeout": 5.0,
        "anchor_interval": 5.0,
        "heal_after": 5.0,
        "dead_retention": 30.0,
        "leave_wait": 1.0,
    },
    "wan": _COMMON
    | {
        "probe_interval": 5.0,
        "probe_timeout": 3.0,
        "indirect_checks": 3,
        "suspicion_mult": 6,
        "confirmed_suspicion": 10.0,
        "gossip_interval": 0.5,
        "gossip_nodes": 4,
        "retransmit_mult": 4,
        "push_pull_interval": 60.0,
        "push_pull_timeout": 10.0,
        "anchor_interval": 15.0,
        "heal_after": 15.0,
        "dead_retention": 60.0,
        "leave_wait": 2.0,
    },
    "local": _COMMON
    | {
        "probe_interval": 1.0,
        "probe_timeout": 0.2,
        "indirect_checks": 1,
        "suspicion_mult": 3,
        "confirmed_suspicion": 1.0,
        "gossip_interval": 0.1,
        "gossip_nodes": 3,
        "retransmit_mult": 2,
        "push_pull_interval": 15.0,
        "push_pull_timeout": 2.0,
        "anchor_interval": 2.0,
        "heal_after": 2.0,
        "dead_retention": 15.0,
        "leave_wait": 0.5,
    },
}


def _timing(help_text: str) -> Any:
    return attrs.field(default=None, validator=positive, metadata={"help": help_text})


@attrs.frozen
class GossipOptions:
    """Keys of [membership] when use = "gossip"; unset timings come from `profile`."""

    profile: str = attrs.field(
        default="lan",
        validator=attrs.validators.in_(tuple(PROFILES)),
        metadata={"help": "timing profile: lan, wan or local"},
    )
    seeds: list[str] = attrs.field(
        factory=list, metadata={"help": "addresses to join through when no lease holder is known"}
    )
    heal: bool = attrs.field(
        default=True,
        metadata={
            "help": "anchor on the lease holder (join through it, merge splits); false = plain SWIM"
        },
    )
    anchor_join: bool = attrs.field(
        default=True, metadata={"help": "join through the lease holder before the seeds"}
    )
    probe_interval: Duration | None = _timing("time between failure probes")
    probe_timeout: Duration | None = _timing("wait for a direct ack before asking others")
    indirect_checks: int | None = attrs.field(
        default=None,
        validator=at_least(0),
        metadata={"help": "members asked to probe indirectly"},
    )
    suspicion_mult: int | None = attrs.field(
        default=None,
        validator=positive,
        metadata={"help": "suspicion timeout = mult * log10(N) * probe_interval"},
    )
    suspicion_max_timeout_mult: int | None = attrs.field(
        default=None,
        validator=positive,
        metadata={"help": "unconfirmed suspicions last up to this multiple of mult * log10(N) * probe_interval"},
    )
    confirmed_suspicion: Duration | None = _timing(
        "a fully confirmed suspicion lasts at most this long (the suspect is pinged meanwhile)"
    )
    awareness_max_multiplier: int | None = attrs.field(
        default=None,
        validator=positive,
        metadata={"help": "cap on the local-health slow-down factor"},
    )
    gossip_interval: Duration | None = _timing("time between gossip rounds")
    gossip_nodes: int | None = attrs.field(
        default=None,
        validator=positive,
        metadata={"help": "members gossiped to per round"},
    )
    retransmit_mult: int | None = attrs.field(
        default=None,
        validator=positive,
        metadata={"help": "each update is sent mult * log10(N+1) times"},
    )
    push_pull_interval: Duration | None = _timing("time between full-state exchanges")
    push_pull_timeout: Duration | None = _timing("wait for a full-state exchange reply")
    anchor_interval: Duration | None = _timing("time between checks against the lease holder")
    heal_after: Duration | None = _timing("views differing from the holder's this long are merged")
    dead_retention: Duration | None = _timing("dead members remembered (and gossiped to) this long")
    leave_wait: Duration | None = _timing("time a leaving node keeps gossiping its goodbye")
    packet_budget: Size | None = attrs.field(
        default=None,
        validator=positive,
        metadata={"help": "bytes of piggybacked updates per message"},
    )


def resolve(options: GossipOptions) -> Settings:
    values = dict(PROFILES[options.profile])
    for name in values:
        override = getattr(options, name)
        if override is not None:
            values[name] = override
    return Settings(
        **values, seeds=tuple(options.seeds), heal=options.heal, anchor_join=options.anchor_join
    )


def stated_bounds(s: Settings, n: int) -> dict[str, float]:
    """Detection: one probe pass over the n members (the victim is probed by
    the last prober to reach it at worst), the longest suspicion, the
    last-chance ping, and the spread of the death. Convergence after the
    last change: a crash's detection, or a join repaired by an anchor check,
    whichever is longer."""
    n = max(1, n)
    _, longest = suspicion_bounds(n, s.probe_interval, s.suspicion_mult, s.suspicion_max_timeout_mult)
    spread = retransmit_limit(s.retransmit_mult, n) * s.gossip_interval
    detection = n * s.probe_interval + longest + s.probe_interval + spread
    join = 1.1 * s.anchor_interval + s.heal_after + s.push_pull_timeout + spread
    return {"detection": detection, "convergence": max(detection, join)}
