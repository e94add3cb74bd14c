"""The core channels every node answers: the leader's `send`, broadcasts,
and the control protocol a shell client (`hedgeplug status|send|broadcast`) speaks."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from ..channels import Dispatcher
from ..contracts import Reply
from ..errors import HedgeplugError
from ..versions import control_answer, request_version

# Channel names used by the core; strategies pick their own names.
APP_SEND = "app.send"
APP_BROADCAST = "app.broadcast"
CONTROL = "control"
APP_PREFIX = "app:"

MAX_CONTROL_TIMEOUT = 300.0


class Served(Protocol):
    """What the core handlers need of their node."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def kv(self) -> Any: ...

    @property
    def ctx(self) -> Any: ...

    def status(self) -> dict[str, Any]: ...

    async def send(self, payload: Any, *, timeout: float = ...) -> Any: ...

    async def broadcast_all(self, payload: Any, **kwargs: Any) -> list[Reply]: ...


@attrs.define
class AppHandlers:
    """The application's handlers, installed through Node.on_send / on_broadcast."""

    send: Callable[..., Any] | None = None
    broadcast: Callable[..., Any] | None = None


def install_core_handlers(dispatcher: Dispatcher, node: Served, app: AppHandlers) -> None:
    async def on_send(msg: Any) -> Any:
        if not node.is_leader:
            raise HedgeplugError("not the leader")
        if app.send is None:
            raise HedgeplugError("the leader has no send handler installed")
        return await call_handler(app.send, msg.payload, msg.sender)

    async def on_broadcast(msg: Any) -> Any:
        if app.broadcast is None:
            return None
        return await call_handler(app.broadcast, msg.payload, msg.sender)

    async def on_control(msg: Any) -> Any:
        # Answered in the client's control protocol version (hedgeplug.versions).
        version = request_version(msg.payload, node.ctx.control_version)
        return control_answer(await answer_control(node, msg.payload), version)

    dispatcher.channel(APP_SEND).handle(on_send)
    dispatcher.channel(APP_BROADCAST).handle(on_broadcast)
    dispatcher.channel(CONTROL).handle(on_control)


async def answer_control(node: Served, request: Any) -> Any:
    """One control request: status, or send/broadcast on a shell client's behalf."""
    op = request.get("op") if isinstance(request, dict) else None
    if op == "status":
        return node.status()
    if isinstance(op, str) and op.startswith("kv."):
        return await node.kv.control(op, request)
    if op in ("send", "broadcast"):
        timeout = request.get("timeout", 5.0)
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 0 < timeout <= MAX_CONTROL_TIMEOUT
        ):
            raise HedgeplugError("control timeout must be a number of seconds in (0, 300]")
        if op == "send":
            return await node.send(request.get("payload"), timeout=float(timeout))
        replies = await node.broadcast_all(request.get("payload"), timeout=float(timeout))
        return [attrs.asdict(r) for r in replies]
    if op == "semaphore-status":
        from ..state import control_semaphore_status

        return await control_semaphore_status(node, request)
    raise HedgeplugError(f"unknown control operation {op!r}")


def _wants_sender(handler: Callable[..., Any]) -> bool:
    # A handler takes (payload) or (payload, sender): parameters with defaults don't count.
    required = [
        p for p in inspect.signature(handler).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) >= 2


# Reading a signature costs more than the rest of a message's handling: once per handler.
_WANTS_SENDER: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


async def call_handler(handler: Callable[..., Any], payload: Any, sender: str) -> Any:
    try:
        wants_sender = _WANTS_SENDER[handler]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable, so not cached
        wants_sender = _wants_sender(handler)
        try:
            _WANTS_SENDER[handler] = wants_sender
        except TypeError:
            pass
    result = handler(payload, sender) if wants_sender else handler(payload)
    if inspect.isawaitable(result):
        result = await result
    return result
