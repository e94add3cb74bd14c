"""Writing pieces to a member as one stream, against credit it granted.

Asking before every piece costs a round trip per piece. Instead the writer
opens a stream to the member, asks for credit (``["reserve", bytes]``; the
member sets aside room in its memory, then its disk, within its own limits,
and answers ``["granted", memory, disk]``), then sends pieces without
waiting (``["piece", seq, data, tier]``), the transport's flow control
pacing it. ``["sync"]`` is answered with ``["synced", pieces stored]`` once
everything before it is stored; ``["remove", seqs]`` undoes pieces. When
the stream ends the member frees the credit that was not used. A member
that grants nothing is full.
"""

from __future__ import annotations

from typing import Any

import anyio

from ..errors import TransportError
from .errors import SpillError
from .holder import EXPIRY_MARGIN, LocalSpill

ANSWER_TIMEOUT = 10.0
_SILENT = object()


async def serve_writes(local: LocalSpill, store: str, ttl: float, stream: Any) -> None:
    """The member's side of one writer's stream (runs as the stream's handler)."""
    credit = {"memory": 0, "disk": 0}
    stored = 0
    try:
        while True:
            # A writer silent for longer than its store can live is gone (or
            # hung): end the stream so its credit comes back.
            message: Any = _SILENT
            with anyio.move_on_after(ttl * EXPIRY_MARGIN):
                try:
                    message = await stream.receive()
                except anyio.EndOfStream:
                    return
            if message is _SILENT:
                return
            tag = message[0] if isinstance(message, list) and message else None
            if tag == "piece" and len(message) == 4 and isinstance(message[2], bytes):
                _, seq, data, tier = message
                if tier not in credit or len(data) > credit[tier] or not isinstance(seq, int):
                    raise SpillError(f"piece {seq!r} of {store} is beyond the credit granted")
                credit[tier] -= len(data)
                await local.put_reserved(store, seq, data, tier, ttl)
                stored += 1
            elif tag == "reserve" and len(message) == 2 and isinstance(message[1], int):
                memory, disk = local.reserve(max(0, message[1]))
                credit["memory"] += memory
                credit["disk"] += disk
                await stream.send(["granted", memory, disk])
            elif tag == "remove" and len(message) == 2 and isinstance(message[1], list):
                for seq in message[1]:
                    local.remove(store, seq)
            elif tag == "sync":
                await stream.send(["synced", stored])
            else:
                raise SpillError(f"unexpected message on the write stream of {store}: {message!r:.80}")
    except SpillError as exc:
        with anyio.move_on_after(1):
            try:
                await stream.send(["error", str(exc)])
            except TransportError:
                pass
    finally:
        local.release(credit["memory"], credit["disk"])


class RemoteSink:
    """The writer's side: one member's stream and the credit left on it."""

    def __init__(self, member: str, stream: Any) -> None:
        self.member = member
        self.stream = stream
        self.credit = {"memory": 0, "disk": 0}
        self.sent = 0

    async def _answer(self, expected: str) -> list[Any]:
        with anyio.fail_after(ANSWER_TIMEOUT):
            answer = await self.stream.receive()
        if isinstance(answer, list) and len(answer) == 2 and answer[0] == "error":
            raise SpillError(f"{self.member}: {answer[1]}")
        if not isinstance(answer, list) or not answer or answer[0] != expected:
            raise SpillError(f"{self.member} answered {answer!r:.120} on a spill write stream")
        return answer

    async def refill(self, want: int) -> bool:
        """Ask for more credit; False when the member granted nothing (it is full)."""
        await self.stream.send(["reserve", want])
        _, memory, disk = await self._answer("granted")
        self.credit["memory"] += memory
        self.credit["disk"] += disk
        return memory + disk > 0

    async def put(self, seq: int, data: bytes) -> bool:
        """Send a piece if the credit covers it (memory first); False if not."""
        for tier in ("memory", "disk"):
            if len(data) <= self.credit[tier]:
                self.credit[tier] -= len(data)
                await self.stream.send(["piece", seq, data, tier])
                self.sent += 1
                return True
        return False

    async def remove(self, seqs: list[int]) -> None:
        await self.stream.send(["remove", seqs])

    async def sync(self) -> None:
        """Wait until the member stored everything sent so far."""
        await self.stream.send(["sync"])
        _, stored = await self._answer("synced")
        if stored < self.sent:
            raise SpillError(f"{self.member} stored {stored} of {self.sent} pieces")

    async def close(self) -> None:
        await self.stream.aclose()
