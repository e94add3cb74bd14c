"""A node's health: is it alive, is it ready, and why not.

    live   the node's loops run: it has started, is not stopping, and its
           election loop went round recently (a blocked store call is
           bounded, so a stuck loop means a stuck node)
    ready  it is in the view it agreed on, it knows a leader, and the lock
           store answered it within the lease's ttl

`verdict(node)` gives the readiness as ``(ready, body)``; `liveness(node)`
the same for liveness; the body is small JSON saying why. They serve three
ways: the node's own endpoint ([health] listen, or ``hedgeplug run --health``;
`serve` here), an ASGI app to mount in an application's web server
(`asgi_app`), and ``hedgeplug status --ready``. All read the node's state on
its own event loop: call them from the loop that runs the node.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from .address import Address
from .errors import HedgeplugError
from .hookspecs import Route
from .node.routes import answer, plugin_routes

MAX_REQUEST = 8192  # bytes of request line and headers we read before refusing
READ_TIMEOUT = 5.0  # seconds a client has to send its request
MAX_CONNECTIONS = 32  # served at once; more are closed at once


class Checked(Protocol):
    """What the checks read of a node."""

    id: str
    config: Any
    lifecycle: Any

    @property
    def parts(self) -> Any: ...

    @property
    def view(self) -> Any: ...

    @property
    def leader(self) -> Any: ...

    @property
    def key_mismatch(self) -> str | None: ...


def liveness(node: Checked) -> tuple[bool, dict[str, Any]]:
    lifecycle, election, timing = node.lifecycle, node.parts.election, node.config.election
    now = anyio.current_time()
    reasons = []
    if lifecycle.task_group is None:
        reasons.append("not started")
    if lifecycle.stopping or lifecycle.killed:
        reasons.append("stopping")
    # The slowest a healthy loop goes round: a capped back-off, a store call
    # bounded by the retry period, and the wait after it; a ttl of slack.
    bound = timing.backoff_cap + 2 * timing.retry_every + timing.ttl
    since = now - election.last_round
    if since > bound:
        reasons.append(f"election loop has not run for {since:.1f}s (bound {bound:.1f}s)")
    body = {"live": not reasons, "node": node.id, "reasons": reasons or ["loops running"]}
    return not reasons, body


def verdict(node: Checked) -> tuple[bool, dict[str, Any]]:
    """Readiness: (ready, body); body["reasons"] says why (or why not)."""
    election, ttl = node.parts.election, node.config.election.ttl
    now = anyio.current_time()
    view, lease = node.view, node.leader
    reasons = []
    if node.id not in view:
        reasons.append(f"not in its view (version {view.version}, {len(view)} members)")
    if lease is None:
        reasons.append("no leader known")
    mismatch = node.key_mismatch
    if mismatch is not None:
        reasons.append(mismatch)  # this node's keys cannot verify the lease holder's
    heard = election.last_store_ok
    store_age = None if heard is None else round(now - heard, 3)
    if store_age is None:
        reasons.append("the lock store has not answered yet")
    elif store_age > ttl:
        reasons.append(f"the lock store last answered {store_age:.1f}s ago (ttl {ttl:g}s)")
    body = {
        "ready": not reasons,
        "node": node.id,
        "reasons": reasons or ["member of the view, leader known, store answering"],
        "leader": None if lease is None else lease.holder,
        "token": 0 if lease is None else lease.token,
        "view_version": str(view.version),
        "members": len(view),
        "store_answered_ago": store_age,
    }
    return not reasons, body


ROUTES: dict[str, Callable[[Checked], tuple[bool, dict[str, Any]]]] = {
    "/livez": liveness,
    "/readyz": verdict,
}


def respond(node: Checked, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body for one request (shared by both servers)."""
    check = ROUTES.get(path.split("?", 1)[0])
    if check is None:
        return 404, {"error": f"no such path {path[:100]!r}; try /livez or /readyz"}
    if method not in ("GET", "HEAD"):
        return 405, {"error": f"method {method[:20]!r} not allowed; use GET"}
    ok, body = check(node)
    return (200 if ok else 503), body


# ------------------------------------------------------------------ HTTP server

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


def _http(
    status: int, body: dict[str, Any] | bytes, *, head: bool = False,
    content_type: str = "application/json",
) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body, sort_keys=True).encode() + b"\n"
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(data)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else data)


async def _read_head(stream: SocketStream) -> bytes | None:
    """The request line and headers, or None when they are too long."""
    received = b""
    while b"\r\n\r\n" not in received and b"\n\n" not in received:
        if len(received) > MAX_REQUEST:
            return None
        chunk = await stream.receive(4096)
        received += chunk
    return received


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path) of a request, or None when it is not HTTP/1.x."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, path = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not method.isalpha() or not path.startswith("/"):
        return None
    return method, path


async def _answer(node: Checked, stream: SocketStream, routes: Mapping[str, Route]) -> None:
    status: int
    body: dict[str, Any] | bytes
    content_type = "application/json"
    head = b""
    with anyio.move_on_after(READ_TIMEOUT) as scope:
        head = await _read_head(stream) or b""
    request = parse_request_line(head) if head else None
    method = request[0] if request else ""
    if scope.cancelled_caught:
        status, body = 408, {"error": f"no complete request within {READ_TIMEOUT:g}s"}
    elif not head:
        status, body = 431, {"error": f"request head longer than {MAX_REQUEST} bytes"}
    elif request is None:
        status, body = 400, {"error": "not an HTTP/1.x request line"}
    elif request[1].split("?", 1)[0] in routes and method in ("GET", "HEAD"):
        # A path a plugin offers (hedgeplug_http_routes), e.g. /metrics.
        status, content_type, body = answer(routes[request[1].split("?", 1)[0]])
    else:
        status, body = respond(node, method, request[1])
    with anyio.move_on_after(READ_TIMEOUT):
        await stream.send(_http(status, body, head=method == "HEAD", content_type=content_type))
        # Closing with unread input would reset the connection and could
        # destroy the answer in flight: end our side, then drain a little.
        await stream.send_eof()
    with anyio.move_on_after(1.0):
        drained = 0
        while drained < 8 * MAX_REQUEST:
            drained += len(await stream.receive(4096))


async def open_listener(listen: Address) -> tuple[Any, str]:
    """A TCP listener on `listen` and its bound host:port; HedgeplugError if it cannot listen."""
    try:
        listener = await anyio.create_tcp_listener(local_host=listen.host, local_port=listen.port)
    except OSError as exc:
        raise HedgeplugError(f"[health] listen {listen}: cannot listen: {exc.strerror or exc}") from None
    port = listener.extra(SocketAttribute.local_address)[1]
    return listener, str(Address(listen.host, int(port)))


async def serve_on(node: Checked, listener: Any) -> None:
    """Serve /livez, /readyz and the paths plugins offer on an open listener until cancelled."""
    slots = anyio.CapacityLimiter(MAX_CONNECTIONS)
    routes = plugin_routes(node)  # asked once, when the server starts

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                slots.acquire_nowait()
            except anyio.WouldBlock:
                return  # too many at once: closing is the cheapest answer
            try:
                await _answer(node, stream, routes)
            except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError, OSError):
                pass  # the client went away
            finally:
                slots.release()

    async with listener:
        await listener.serve(handle)


async def serve(
    node: Checked, listen: Address, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve on `listen` until cancelled; ``await tg.start(serve, node, listen)``
    returns the bound host:port."""
    listener, bound = await open_listener(listen)
    task_status.started(bound)
    await serve_on(node, listener)


# ------------------------------------------------------------------ ASGI

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_app(node: Checked) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering /livez and /readyz (mount it under any prefix:
    the path is taken relative to the mount's root_path)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                if kind in ("startup", "shutdown"):
                    await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        method = scope.get("method", "GET")
        status, body = respond(node, method, path)
        data = json.dumps(body, sort_keys=True).encode() + b"\n"
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                        (b"content-length", str(len(data)).encode())],
        })
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else data})

    return app
