"""Broadcast `direct`: concurrent fan-out of one request per member, replies
yielded as they arrive. A member that fails or times out becomes a Reply
with ok=False and the error text; nothing is raised for it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import attrs

from hedgeplug.plugin import Member, NodeContext, Reply, at_least, hookimpl


@attrs.frozen
class DirectOptions:
    concurrency: int = attrs.field(
        default=64,
        validator=at_least(1),
        metadata={"help": "requests in flight at once"},
    )


class DirectBroadcast:
    def __init__(self, options: DirectOptions, ctx: NodeContext) -> None:
        self.options = options
        self.ctx = ctx

    async def deliver(
        self, channel: str, payload: Any, targets: Sequence[Member], timeout: float
    ) -> AsyncIterator[Reply]:
        if not targets:
            return
        ch = self.ctx.channel(channel)
        limiter = anyio.CapacityLimiter(self.options.concurrency)
        send, receive = anyio.create_memory_object_stream[Reply](math.inf)

        async def one(member: Member) -> None:
            async with limiter:
                try:
                    with anyio.fail_after(timeout):
                        answer = await ch.request(member.address, payload, timeout)
                    reply = Reply(member.id, member.address, True, answer)
                except TimeoutError:
                    reply = Reply(member.id, member.address, False, error=f"no reply within {timeout}s")
                except Exception as exc:
                    reply = Reply(member.id, member.address, False, error=f"{type(exc).__name__}: {exc}")
            try:
                send.send_nowait(reply)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the reader stopped early

        # The requests run in a task of the node, not in this generator: a
        # generator must not yield inside a task group, or a reader that stops
        # early (break, aclose) would leave it awaiting while being closed.
        requests = anyio.CancelScope()

        async def fan_out() -> None:
            with requests, send:
                async with anyio.create_task_group() as tg:
                    for member in targets:
                        tg.start_soon(one, member)

        self.ctx.spawn(fan_out)
        try:
            with receive:
                for _ in range(len(targets)):
                    yield await receive.receive()
        finally:
            requests.cancel()  # a reader that stopped early: drop the rest


def make(options: DirectOptions, ctx: NodeContext) -> DirectBroadcast:
    return DirectBroadcast(options, ctx)


@hookimpl
def hedgeplug_register_broadcasts(register: Any) -> None:
    register("direct", make, DirectOptions)
