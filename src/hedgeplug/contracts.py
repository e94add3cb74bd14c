"""The interfaces of the four plugin kinds and the node context they receive.

These are typing Protocols: a plugin implements them by shape, it never
subclasses anything from the core. Optional capabilities (watch, rows, stated bounds) are
separate runtime-checkable protocols; the core asks `isinstance(backend,
Watchable)` and falls back when a backend does not opt in.

Every factory is called as ``factory(options, context)`` where `options` is an
instance of the attrs class the plugin registered for its config section and
`context` is the `NodeContext` of the node being built.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from random import Random
from typing import Any, Protocol, runtime_checkable

import attrs

from .view import Member, View

# ---------------------------------------------------------------- lock


@attrs.frozen
class Lease:
    """The lock record as the store holds it.

    `token` is the fencing token: it strictly increases every time the holder
    changes (it may stay the same across renewals by one holder).
    `remaining` is the store-clock time left when the record was read.
    `fingerprint` names the cluster key of the holder: the key id (hex) of its
    primary key, "clear" for a node without a key, "" when the backend or the
    writer keeps none (see `Fingerprinted` and docs/security.md).
    """

    lock: str
    holder: str
    address: str
    token: int
    ttl: float
    remaining: float
    fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@runtime_checkable
class LockBackend(Protocol):
    """One lock name in one store. All methods make a single attempt.

    Store trouble is raised as `hedgeplug.errors.StoreError`; "somebody else
    holds it" is not an error but a None result.
    """

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:
        """Take the lock if it is free or expired by the store's clock; never waits for a holder."""

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend our lease; None means it is lost (expired and taken, or token moved on)."""

    async def release(self, lease: Lease) -> None:
        """Give the lock up so the next contender can take it at once."""

    async def current(self) -> Lease | None:
        """Who holds the lock now (None when free or expired)."""

    async def aclose(self) -> None:
        """Free connections and threads."""


@runtime_checkable
class Fingerprinted(Protocol):
    """Optional: the lease record keeps the holder's key fingerprint (docs/security.md).
    It also promises: ``acquire(..., *, fingerprint="")`` stores it, `renew`
    stores ``lease.fingerprint``, and every Lease returned carries it."""

    async def last_fingerprint(self) -> str:
        """Of the newest record, held or not (released, expired); "" if none."""


@runtime_checkable
class Watchable(Protocol):
    """Optional: a backend that can notify lock changes."""

    def watch(self) -> AsyncIterator[None]:
        """Yield (best effort, possibly spuriously) whenever the lock record may have changed."""


@runtime_checkable
class LocalOnly(Protocol):
    """Optional: a backend whose store lives on this host only (a file).

    Nodes on other hosts would each get their own store and each lead. A
    node whose advertised address is not loopback refuses to start with such
    a lock unless [lock] shared_store = true says the store really is shared."""

    def local_only(self) -> str:
        """Where the store lives, for the message (e.g. "SQLite file /run/x.sqlite")."""


@attrs.frozen
class Row:
    """One record of the optional row storage capability."""

    key: str
    value: bytes
    version: int


@runtime_checkable
class RowStorage(Protocol):
    """Optional: small versioned records beside the lock (for key/value log, semaphore).

    Versions start at 1 and increase by one on every successful write;
    `expect=0` means "create only", `expect=None` means unconditional.
    """

    async def row_get(self, key: str) -> Row | None: ...

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        """Write; None when `expect` did not match the stored version."""

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool: ...

    async def row_scan(self, prefix: str) -> list[Row]: ...


@attrs.frozen
class LogEntry:
    """One record of the optional fenced key/value log.

    `version` counts the appends to `key` (1, 2, ...); `revision` strictly
    increases across all appends to the log of one lock, in commit order;
    `token` is the fencing token the append carried; `committed_at` is the
    store's clock at commit, in seconds since the Unix epoch (each backend
    documents which clock that is).
    """

    key: str
    value: bytes
    version: int
    revision: int
    token: int
    committed_at: float

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@runtime_checkable
class FencedLog(Protocol):
    """Optional: an append-only key/value log beside the lock, fenced by its token.

    `log_append` and `log_trim` check, in the SAME store transaction as the
    write, that `token` is the token of the lock's current lease (held, not
    released, not expired by the store's clock); otherwise they write nothing
    and return None. So a holder that lost its lease (a pause, a partition)
    cannot write once a newer lease exists, whatever it believes.
    """

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        """Append `value` as the next version of `key`; None when `token` is not current."""

    async def log_read(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        """Entries of `key`, newest first (oldest first on request), at most `limit`."""

    async def log_keys(self, prefix: str) -> list[str]:
        """Keys with at least one entry that start with `prefix`, in code point order."""

    async def log_since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        """Up to `limit` entries with a revision above `revision` whose key starts
        with `prefix`, in revision order."""

    async def log_last_revision(self) -> int:
        """A revision at or above every entry committed so far (0 for an empty log)."""

    async def log_trim(self, token: int, key: str, keep: int) -> int | None:
        """Drop all but the newest `keep` (>= 1) entries of `key`; the count dropped,
        or None when `token` is not current."""


# ---------------------------------------------------------------- transport

# A frame handler receives the raw bytes of one frame and the transport's
# description of the peer; for a request it returns the reply bytes (None or
# b"" means "no reply", which the requester sees as an empty reply).
FrameHandler = Callable[[bytes, str], Awaitable[bytes | None]]


@runtime_checkable
class MessageStream(Protocol):
    """Ordered, reliable messages both ways with backpressure."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """Next message; raises anyio.EndOfStream when the peer closed."""

    async def aclose(self) -> None: ...


StreamHandler = Callable[[MessageStream], Awaitable[None]]


@attrs.define
class TransportStats:
    """Counters every transport keeps; drops are counted by reason."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: dict[str, int] = attrs.Factory(dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


@runtime_checkable
class Transport(Protocol):
    """Moves opaque frames between addresses.

    Life cycle: `bind()` once (returns the address others reach this node at),
    then `serve(...)` runs as a task until cancelled, then `aclose()`.
    """

    stats: TransportStats
    max_frame: int

    async def bind(self) -> str: ...

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None: ...

    async def request(self, address: str, data: bytes, timeout: float) -> bytes:
        """Send a frame and wait for its reply; TransportError / RequestTimeout on failure."""

    async def send(self, address: str, data: bytes) -> None:
        """Best effort one-way frame; network failures are counted, not raised."""

    async def open_stream(self, address: str) -> MessageStream: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------- messages


@attrs.frozen
class Message:
    """A decoded message handed to a channel handler."""

    sender: str
    channel: str
    payload: Any
    msg_id: int


Handler = Callable[[Message], Awaitable[Any]]


class Channel(Protocol):
    """A named message channel of one node (each strategy uses its own)."""

    name: str

    def handle(self, handler: Handler) -> None:
        """Install the handler for requests and one-way messages on this channel."""

    async def request(self, address: str, payload: Any, timeout: float) -> Any:
        """Send and wait for the handler's return value (RemoteError if it raised)."""

    async def send(self, address: str, payload: Any) -> None:
        """One-way, best effort."""

    async def deliver_here(self, payload: Any, sender: str) -> Any:
        """Run this node's own handler as if `sender` had sent `payload` (for
        strategies that relay messages); RemoteError if none or it raised."""


# ---------------------------------------------------------------- node context


class NodeContext(Protocol):
    """What every plugin gets from its node: identity, clock, randomness,
    leader knowledge, channels, and a way to publish views.

    Protocol code takes time only from `now()`/`sleep()` and randomness only
    from `random`; that is what lets the simulator replay a run from a seed.
    """

    id: str
    cluster: str
    lock_name: str
    meta: Mapping[str, str]
    random: Random
    log: logging.Logger

    @property
    def address(self) -> str: ...

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `fn(*args)` as a task of the node, cancelled when the node stops
        (work that must outlive the call that started it, such as the requests
        behind a broadcast whose reader stopped early)."""

    @property
    def leader(self) -> Lease | None:
        """Newest lease this node knows of (from the store); may be a little stale."""

    @property
    def is_leader(self) -> bool:
        """True only while this node holds a lease that is valid by the election's rule."""

    @property
    def newest_token(self) -> int:
        """Highest fencing token this node has seen."""

    async def wait_leader_change(self) -> None:
        """Return after the known leader (holder or token) changes."""

    async def read_leader(self) -> Lease | None:
        """Ask the store now who holds the lease."""

    @property
    def view(self) -> View: ...

    def publish_view(self, view: View) -> None:
        """Make `view` the node's view (observers and events fire on changes)."""

    def channel(self, name: str) -> Channel: ...

    def count(self, what: str, n: int = 1) -> None:
        """Add to a named counter (shown in status)."""

    def transport_for(self, member: Member) -> str:
        """The address to reach `member` at (its advertised address)."""


# ---------------------------------------------------------------- membership


@runtime_checkable
class Membership(Protocol):
    """Keeps the view. `run` is a task of the node, cancelled at shutdown
    after `leave` was awaited (bounded by the node's stop timeout).

    Optional: `async def set_meta(meta)`, called after `Node.set_meta` changed
    ctx.meta, to spread the new metadata at once."""

    async def run(self) -> None: ...

    async def leave(self) -> None: ...


@runtime_checkable
class StatesBounds(Protocol):
    """Optional: a membership that states its own bounds (invariants 2 and 3
    of docs/design.md), computed from its options for a cluster of `cluster_size`
    members (count the members still in views, departed ones included).

    Keys, in seconds: "detection" (a crashed member gone from every live
    view) and "convergence" (every live view equal to the live set after the
    last change). The simulator checks against these unless told otherwise.
    """

    def bounds(self, cluster_size: int) -> Mapping[str, float]: ...


# ---------------------------------------------------------------- broadcast


@attrs.frozen
class Reply:
    """One member's answer to a broadcast: either `payload` or `error` is set."""

    member: str
    address: str
    ok: bool
    payload: Any = None
    error: str | None = None


@runtime_checkable
class Broadcast(Protocol):
    """Delivers a payload on a channel to a set of members."""

    def deliver(
        self, channel: str, payload: Any, targets: Sequence[Member], timeout: float
    ) -> AsyncIterator[Reply]:
        """Yield replies as they arrive; errors per member are replies with ok=False."""


# ---------------------------------------------------------------- observed node


class ObservedNode(Protocol):
    """What an observer hook may read of the node that calls it (a `hedgeplug.Node`)."""

    id: str
    cluster: str
    address: str

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader(self) -> Lease | None: ...

    @property
    def token(self) -> int: ...

    @property
    def view(self) -> View: ...

    def status(self) -> dict[str, Any]:
        """The same document `hedgeplug status --json` shows."""
