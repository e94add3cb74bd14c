"""Everything a plugin author imports, in one module.

    from hedgeplug.plugin import hookimpl, Lease, LockBackend, Duration, positive

A plugin implements one of four kinds (lock, transport, membership,
broadcast) by shape: the contracts below are typing Protocols, nothing is
subclassed. It registers each implementation from a registration hook:

    @hookimpl
    def hedgeplug_register_locks(register):
        register("filelock", make_lock, FileLockOptions)

where `FileLockOptions` is an attrs class holding the keys of the config
section (fields typed `Duration`, `Size` or `Address` are parsed by the
loader) and `make_lock(options, context)` builds the implementation.

Built-in plugins import only from here, as a third party would. docs/plugins.md
lists every contract method with its signature and meaning.
"""

from __future__ import annotations

from .address import Address, AddressError
from .contracts import (
    Broadcast,
    Channel,
    FencedLog,
    Fingerprinted,
    FrameHandler,
    Handler,
    Lease,
    LocalOnly,
    LockBackend,
    LogEntry,
    Membership,
    Message,
    MessageStream,
    NodeContext,
    ObservedNode,
    Reply,
    Row,
    RowStorage,
    StatesBounds,
    StreamHandler,
    Transport,
    TransportStats,
    Watchable,
)
from .errors import (
    ConfigError,
    FrameTooLarge,
    HedgeplugError,
    NoLeader,
    PluginError,
    RemoteError,
    RequestTimeout,
    StoreError,
    TransportError,
)
from .hookspecs import Route, RouteResponse, hookimpl
from .options import (
    Duration,
    Size,
    at_least,
    format_duration,
    fraction,
    parse_duration,
    parse_size,
    positive,
)
from .view import Member, MemberState, View, ViewVersion
from .worker import run_in_worker

__all__ = [
    "Address",
    "AddressError",
    "Broadcast",
    "Channel",
    "ConfigError",
    "Duration",
    "FencedLog",
    "Fingerprinted",
    "FrameHandler",
    "FrameTooLarge",
    "Handler",
    "HedgeplugError",
    "Lease",
    "LocalOnly",
    "LockBackend",
    "LogEntry",
    "Member",
    "MemberState",
    "Membership",
    "Message",
    "MessageStream",
    "NoLeader",
    "NodeContext",
    "ObservedNode",
    "PluginError",
    "RemoteError",
    "Reply",
    "RequestTimeout",
    "Route",
    "RouteResponse",
    "Row",
    "RowStorage",
    "Size",
    "StatesBounds",
    "StoreError",
    "StreamHandler",
    "Transport",
    "TransportError",
    "TransportStats",
    "View",
    "ViewVersion",
    "Watchable",
    "at_least",
    "format_duration",
    "fraction",
    "hookimpl",
    "parse_duration",
    "parse_size",
    "positive",
    "run_in_worker",
]
