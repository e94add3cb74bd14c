"""Every hook a hedgeplug plugin can implement.

Registration hooks are called once when the registry loads, before any node
exists. Each receives a `register(name, factory, options)` callable: `name`
is what a config selects with ``use = "name"``, `factory(options, context)`
builds the implementation, and `options` is the attrs class holding the keys
of that config section. The object the factory returns is checked against its
kind's contract (hedgeplug.contracts) when a node builds it.

Observer hooks are called by a running node, synchronously, from the node's
own task: keep them quick. They go through pluggy's hook caller, so
``tryfirst``, ``trylast``, ``hookwrapper`` and ``wrapper`` work as in any
pluggy project. An observer that raises is logged with its plugin's name and
switched off for that node; the other observers still run and the node goes on.

Timing hooks (store calls, send and broadcast) cost the node nothing unless a
plugin implements them: each node asks once, when it is built, whether any
implementation is registered, and skips the clock readings and the call
otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from .contracts import Lease, NodeContext
    from .contracts import ObservedNode as Node
    from .view import Member, View

hookspec = pluggy.HookspecMarker("hedgeplug")
hookimpl = pluggy.HookimplMarker("hedgeplug")


# What a route of `hedgeplug_http_routes` returns: (HTTP status, content type, body).
RouteResponse = tuple[int, str, bytes]
Route = Callable[[], RouteResponse]


class Register(Protocol):
    """What a registration hook receives: call it once per implementation."""

    def __call__(
        self, name: str, factory: Callable[[Any, NodeContext], Any], options: type
    ) -> None: ...


@hookspec
def hedgeplug_register_locks(register: Register) -> None:
    """Register lock backends (where the lease lives); called once at registry load."""


@hookspec
def hedgeplug_register_transports(register: Register) -> None:
    """Register transports (how frames move between nodes); called once at registry load."""


@hookspec
def hedgeplug_register_memberships(register: Register) -> None:
    """Register membership strategies (how the view is kept); called once at registry load."""


@hookspec
def hedgeplug_register_broadcasts(register: Register) -> None:
    """Register broadcast strategies (how a message reaches all members); called once at
    registry load."""


@hookspec
def hedgeplug_node_started(node: Node) -> None:
    """Called once per node start, after the node is bound and its tasks are running."""


@hookspec
def hedgeplug_leader_changed(node: Node, lease: Lease | None, previous: Lease | None) -> None:
    """Called each time the node learns of a different leader (another holder or a newer
    token), including losing it: `lease` is then None. `previous` is what it knew before."""


@hookspec
def hedgeplug_members_changed(
    node: Node, view: View, joined: tuple[Member, ...], left: tuple[Member, ...]
) -> None:
    """Called each time the node's view changes who is a member (not on a mere version or
    metadata bump); `joined` and `left` are the members that came and went."""


@hookspec
def hedgeplug_member_updated(node: Node, member: Member, previous: Member) -> None:
    """Called each time a member that stays in the node's view changes its metadata or
    address: `previous` is how it was, `member` how it is now."""


@hookspec
def hedgeplug_node_stopping(node: Node) -> None:
    """Called once when a node begins a graceful stop, before it leaves the membership and
    releases its lease (not on a kill)."""


@hookspec
def hedgeplug_store_call(node: Node, operation: str, seconds: float, error: str | None) -> None:
    """Called after each call the election makes to the lock backend.

    `operation` is ``"acquire"``, ``"renew"``, ``"release"`` or ``"current"``;
    `seconds` is how long the call took on the node's clock; `error` is None
    when it returned (a lease or None: "held by someone else" is not an error),
    ``"cancelled"`` when it was cut short (the election's deadline passed or
    the node stopped), ``"timeout"`` for a TimeoutError, else the name of the
    exception's class (``"StoreError"``, ``"ConnectionRefusedError"``, ...)."""


@hookspec
def hedgeplug_messaging_call(node: Node, operation: str, seconds: float, error: str | None) -> None:
    """Called when the application's ``node.send`` or ``node.broadcast`` finishes.

    `operation` is ``"send"`` (from the call until the leader's reply, retries
    through a failover included) or ``"broadcast"`` (from the call until the
    last reply was yielded). `error` is None on success, ``"cancelled"`` when
    the caller was cancelled, ``"closed"`` when the caller stopped reading a
    broadcast's replies early, else the exception's class name (``"NoLeader"``,
    ``"RequestTimeout"``, ``"RemoteError"``, ...). A broadcast whose members
    failed still succeeds: their `Reply` has ``ok=False``."""


@hookspec
def hedgeplug_http_routes(node: Node) -> Mapping[str, Route] | None:
    """Extra paths for the node's health HTTP server, asked once when it starts.

    Return a mapping of path (``"/metrics"``) to a callable taking no arguments
    and returning ``(status, content_type, body)``; the server calls it on the
    node's event loop for each GET of that path, so it may read the node but
    must be quick. The core's own paths (``/livez``, ``/readyz``) cannot be
    replaced; a path offered twice is kept once and the other offer logged
    (hedgeplug.node.routes does this for the server)."""
