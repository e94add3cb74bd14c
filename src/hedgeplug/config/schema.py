"""The core sections' schema and the validated `Config`.

Every plugin section ([lock] [transport] [membership] [broadcast]) is read
the same way: the keys of its core class (CORE_SETTINGS) belong to the core,
every other key to the chosen plugin's options class. The lock's core class
carries the election's timings; the others carry only ``use``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs

from ..address import Address
from ..keyring import validate_key_file
from ..options import Duration, fraction, positive
from .convert import convert, field_types

SECTIONS = ("node", "lock", "transport", "membership", "broadcast", "health")
PLUGIN_KINDS = ("lock", "transport", "membership", "broadcast")


def _default_node_id() -> str:
    # The id only has to be unique and stable for this process's lifetime.
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{os.urandom(2).hex()}"


@attrs.frozen
class NodeSettings:
    """[node]: identity of this process's participant."""

    id: str = attrs.field(factory=_default_node_id, metadata={"help": "unique id; default host-pid-random"})
    cluster: str = attrs.field(default="hedgeplug", metadata={"help": "cluster name, sent in every frame"})
    lock_name: str = attrs.field(default="", metadata={"help": "lock name in the store; default: the cluster name"})
    key: str = attrs.field(default="", metadata={"help": "shared secret; when set, frames are encrypted and authenticated"})
    meta: dict[str, str] = attrs.field(factory=dict, metadata={"help": "small str->str metadata shown to other members"})
    seed: int | None = attrs.field(default=None, metadata={"help": "seed for protocol randomness; default random"})
    stop_timeout: Duration = attrs.field(default=Duration(3.0), validator=positive, metadata={"help": "bound on a graceful stop"})
    # Keys and exposure (see hedgeplug.keyring and docs/security.md).
    key_file: str = attrs.field(default="", validator=validate_key_file, metadata={"help": "file of cluster keys, one a line: the first seals, all are accepted; followed while running"})
    insecure: bool = attrs.field(default=False, metadata={"help": "allow running without a key on a non-loopback address"})

    @property
    def lock(self) -> str:
        return self.lock_name or self.cluster


@attrs.frozen
class LockSettings:
    """[lock] core keys: the store backend and the election's timings."""

    use: str = attrs.field(default="sqlite", metadata={"help": "lock backend name (see `hedgeplug plugins`)"})
    ttl: Duration = attrs.field(default=Duration(5.0), validator=positive, metadata={"help": "lease time to live"})
    margin: float = attrs.field(default=0.25, validator=fraction, metadata={"help": "leader counts itself leader only for ttl*(1-margin) after sending a renewal"})
    renew: Duration | None = attrs.field(default=None, validator=positive, metadata={"help": "renewal period; default ttl/4"})
    retry: Duration | None = attrs.field(default=None, validator=positive, metadata={"help": "contender and follower poll period; default ttl/4"})
    shared_store: bool = attrs.field(default=False, metadata={"help": "declare that a host-local store (sqlite) is really shared by every node; without it such a lock refuses a non-loopback advertised address"})
    backoff_max: Duration | None = attrs.field(default=None, validator=positive, metadata={"help": "longest wait between store calls of a node that is not leading, after store errors (exponential, jittered); default: the ttl"})

    @property
    def renew_every(self) -> float:
        return self.renew if self.renew is not None else self.ttl / 4

    @property
    def retry_every(self) -> float:
        return self.retry if self.retry is not None else self.ttl / 4

    @property
    def backoff_cap(self) -> float:
        return self.backoff_max if self.backoff_max is not None else self.ttl


ElectionSettings = LockSettings


@attrs.frozen
class HealthSettings:
    """[health]: the node's HTTP health endpoint (/livez, /readyz)."""

    listen: Address | None = attrs.field(default=None, metadata={"help": "host:port to serve /livez and /readyz on; default: no endpoint"})


@attrs.frozen
class TransportSettings:
    """[transport] core keys."""

    use: str = attrs.field(default="tcp", metadata={"help": "transport name (see `hedgeplug plugins`)"})


@attrs.frozen
class MembershipSettings:
    """[membership] core keys."""

    use: str = attrs.field(default="heartbeat", metadata={"help": "membership strategy name"})


@attrs.frozen
class BroadcastSettings:
    """[broadcast] core keys."""

    use: str = attrs.field(default="direct", metadata={"help": "broadcast strategy name"})


# The core part of each plugin section, read before the plugin's own options.
CORE_SETTINGS: dict[str, type] = {
    "lock": LockSettings,
    "transport": TransportSettings,
    "membership": MembershipSettings,
    "broadcast": BroadcastSettings,
}
# Sections that belong to the core alone (no plugin): read into these classes.
CORE_SECTIONS: dict[str, type] = {"node": NodeSettings, "health": HealthSettings}
DEFAULT_USE = {kind: attrs.fields_dict(cls)["use"].default for kind, cls in CORE_SETTINGS.items()}


@attrs.frozen
class Section:
    """A plugin section after validation: the core part and the plugin's options."""

    use: str
    options: Any
    core: Any = None


@attrs.frozen
class Config:
    """A validated configuration, ready for `hedgeplug.open_node`."""

    node: NodeSettings
    lock: Section
    transport: Section
    membership: Section
    broadcast: Section
    source: str = "(defaults)"
    health: HealthSettings = attrs.field(factory=HealthSettings)

    @property
    def election(self) -> LockSettings:
        return self.lock.core  # type: ignore[no-any-return]

    def section(self, kind: str) -> Section:
        if kind not in PLUGIN_KINDS:
            raise KeyError(kind)
        return getattr(self, kind)  # type: ignore[no-any-return]

    def with_node(self, **changes: Any) -> Config:
        return attrs.evolve(self, node=attrs.evolve(self.node, **changes))

    def with_options(self, kind: str, **changes: Any) -> Config:
        """A copy with some of section `kind`'s values changed (core or plugin
        keys), each converted to its field's type; validators run again."""
        section = self.section(kind)
        core_types, option_types = field_types(type(section.core)), field_types(type(section.options))
        unknown = set(changes) - set(core_types) - set(option_types)
        if unknown:
            raise ValueError(f"[{kind}] {section.use!r} has no option {', '.join(sorted(unknown))}")
        core = attrs.evolve(section.core, **{
            k: convert(core_types[k], v, from_text=False) for k, v in changes.items() if k in core_types
        })
        options = attrs.evolve(section.options, **{
            k: convert(option_types[k], v, from_text=False) for k, v in changes.items() if k not in core_types
        })
        replaced: dict[str, Any] = {kind: attrs.evolve(section, core=core, options=options)}
        return attrs.evolve(self, **replaced)
