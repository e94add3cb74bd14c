"""Which versions of the wire and control protocols a node speaks, and which
wire version it sends to whom.

The rule (CHANGELOG.md states it for operators): a release whose newest wire
version is N reads and writes N-1 and N, and the same holds for the control
protocol. Every node advertises the newest versions it speaks in its member
metadata, under ADVERTISED_KEY (value "w<wire>c<control>", e.g. "w2c2"); a
member advertising nothing is of a release from before the rule (0.1.0) and
speaks wire 1, control 1. A node sends

- to an address of a live member of its view: the lowest newest-version
  among those members (so nobody in the view is sent what it cannot read);
- to any other address (a seed, a lease holder it has not seen in a view
  yet, a joining node): N-1, which every release of the step reads;
- a reply: in the version the request came in.

A cluster therefore moves to N by itself, without a restart, once its last
member of the older release has left or come back upgraded.

HEDGEPLUG_WIRE_VERSION=<N-1> (read when a node or client starts) pins it to
the older wire version the way an older release is: it sends, reads and
advertises only N-1. HEDGEPLUG_CONTROL_VERSION=<N-1> does the same for the
control protocol. Both exist for tests of mixed clusters.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

from .errors import ConfigError, HedgeplugError, TransportError
from .view import Member, View

WIRE_VERSION = 2
WIRE_VERSIONS = (1, 2)
WIRE_VERSION_ENV = "HEDGEPLUG_WIRE_VERSION"

CONTROL_VERSION = 2
CONTROL_VERSIONS = (1, 2)
CONTROL_VERSION_ENV = "HEDGEPLUG_CONTROL_VERSION"

ADVERTISED_KEY = "hp.v"  # short: it travels with every member in every full view
RESERVED_PREFIX = "hp."  # metadata keys the node sets itself
UNADVERTISED = (1, 1)  # what a member of release 0.1.0 (no advertisement) speaks

log = logging.getLogger("hedgeplug.versions")


def pinned(env_name: str, versions: tuple[int, ...], environ: Mapping[str, str] | None = None) -> int:
    """The newest version to speak: the one `env_name` pins, else the newest."""
    text = (os.environ if environ is None else environ).get(env_name, "").strip()
    if not text:
        return versions[-1]
    if text not in {str(v) for v in versions}:
        raise ConfigError(
            f"environment {env_name}={text!r}: expected one of " + ", ".join(str(v) for v in versions)
        )
    return int(text)


def advertisement(wire: int, control: int) -> dict[str, str]:
    """The metadata a node speaking up to these versions adds to its own."""
    return {ADVERTISED_KEY: f"w{wire}c{control}"}


def with_advertisement(meta: Mapping[str, str], wire: int, control: int) -> dict[str, str]:
    """`meta` without keys of RESERVED_PREFIX, plus this node's advertisement."""
    own = {k: v for k, v in meta.items() if not k.startswith(RESERVED_PREFIX)}
    return {**own, **advertisement(wire, control)}


def advertised(member: Member) -> tuple[int, int]:
    """(wire, control): the newest versions `member` says it speaks."""
    return _advertised_in(member.meta)


@functools.lru_cache(maxsize=4096)  # members of one cluster share a handful of meta tuples
def _advertised_in(meta: tuple[tuple[str, str], ...]) -> tuple[int, int]:
    for key, value in meta:
        if key == ADVERTISED_KEY:
            return _parse(value)
    return UNADVERTISED


def _parse(value: str) -> tuple[int, int]:
    wire, sep, control = value.removeprefix("w").partition("c")
    if sep and wire.isdigit() and control.isdigit() and len(value) <= 12:
        return int(wire), int(control)
    return UNADVERTISED  # unreadable: assume the oldest, which every release of the step reads


# ------------------------------------------------------------------ wire selection


class WireVersions:
    """The wire version this node sends to an address (see the module docstring).

    `newest`: the newest version this node speaks (the previous one when
    pinned); `view`: reads the node's current view. Views are immutable, so
    what a view implies is computed once per view object, and once per
    process for a view nodes share (the simulator's)."""

    def __init__(
        self,
        newest: int,
        view: Callable[[], View],
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.newest = newest
        self.oldest = WIRE_VERSIONS[0] if newest == WIRE_VERSIONS[-1] else newest
        self._view = view
        self._count = count
        self._seen: View | None = None
        self._in_use = self.oldest
        self._addresses: frozenset[str] = frozenset()

    @property
    def in_use(self) -> int:
        """The version sent to the members of the current view."""
        self._refresh()
        return self._in_use

    def for_address(self, address: str) -> int:
        self._refresh()
        return self._in_use if address in self._addresses else self.oldest

    def _refresh(self) -> None:
        view = self._view()
        if view is self._seen:
            return
        self._seen = view
        lowest, self._addresses = _summary(view)
        if not self._addresses:
            return  # no members: everyone is a stranger, written N-1; keep the last choice
        in_use = max(self.oldest, min(self.newest, lowest))
        if in_use != self._in_use:
            log.info("wire version for the members of view %s: %d -> %d", view.version, self._in_use, in_use)
            if self._count is not None:
                self._count(f"wire.now-v{in_use}")
            self._in_use = in_use


# Summaries of the views nodes are moving between now: (view, lowest newest
# wire version, live addresses), by id(view); the view is kept, so an id is
# never reused while its entry lives. Small and least-recently-used first out.
SUMMARIES = 16
_SUMMARIES: dict[int, tuple[View, int, frozenset[str]]] = {}


_META = attrgetter("meta")
_ADDRESS = attrgetter("address")


def _summary(view: View) -> tuple[int, frozenset[str]]:
    hit = _SUMMARIES.pop(id(view), None)
    if hit is None or hit[0] is not view:
        live = view.live  # mapped, not looped: a simulated view holds thousands of members
        newest = [wire for wire, _ in map(_advertised_in, map(_META, live))]
        hit = (view, min(newest, default=WIRE_VERSIONS[-1]), frozenset(map(_ADDRESS, live)))
    _SUMMARIES[id(view)] = hit
    if len(_SUMMARIES) > SUMMARIES:
        del _SUMMARIES[next(iter(_SUMMARIES))]
    return hit[1], hit[2]


# ------------------------------------------------------------------ control protocol
#
# Version 1 (release 0.1.0): the request is a map {"op": ..., ...}; the answer
# is the bare result. Version 2: the request also names its version
# ("control": 2) and the answer is exactly {"control": 2, "result": RESULT}.
# A node answers in the version the request names (none: 1).


def control_request(payload: Any, version: int) -> Any:
    """`payload` as a request of control protocol `version` (an explicit
    "control" field in the payload is kept: tests send foreign versions)."""
    if version == 1 or not isinstance(payload, dict) or "control" in payload:
        return payload
    return {**payload, "control": version}


def request_version(request: Any, newest: int) -> int:
    """The control version a request speaks, if this node (speaking up to
    `newest`) can answer it; HedgeplugError naming both versions otherwise."""
    if newest == 1 or not isinstance(request, dict):
        return 1  # release 0.1.0 ignored the field, and so does a node pinned to it
    version = request.get("control", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise HedgeplugError(f"control protocol version must be an integer, got {version!r}")
    low = CONTROL_VERSIONS[0]
    if version > newest:
        raise HedgeplugError(
            f"control protocol version {version} is newer than this node speaks "
            f"({low}-{newest}): use a hedgeplug command of the node's release, or upgrade the node"
        )
    if version < low:
        raise HedgeplugError(
            f"control protocol version {version} is older than this node speaks "
            f"({low}-{newest}): use a hedgeplug command of the node's release"
        )
    return version


def control_answer(result: Any, version: int) -> Any:
    return result if version == 1 else {"control": version, "result": result}


def control_result(reply: Any, sent: int, address: str) -> Any:
    """The result inside a node's answer to a request of version `sent`."""
    if sent == 1:
        return reply
    if isinstance(reply, dict) and len(reply) == 2 and "control" in reply and "result" in reply:
        version = reply["control"]
        if version not in CONTROL_VERSIONS or version > sent:
            raise TransportError(
                f"{address} answered in control protocol version {version!r}; this command "
                f"sent version {sent} and speaks {CONTROL_VERSIONS[0]}-{CONTROL_VERSION}"
            )
        return reply["result"]
    return reply  # a node of release 0.1.0 (or pinned to it) answers version 1: the bare result
