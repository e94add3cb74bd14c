"""Errors of the spill-over store; each message names the store and, where
one is involved, the member."""

from __future__ import annotations

from ..errors import HedgeplugError


class SpillError(HedgeplugError):
    """A spill-over store was misused or is gone (deleted, expired, bad settings)."""


class SpillFull(SpillError):
    """No tier of this node and no member in the view had room for a chunk."""


class SpillExpired(SpillError):
    """The store went unused for longer than its ttl and was freed everywhere."""


class ChunkLost(SpillError):
    """A chunk cannot be read back: the member holding it left the cluster or lost it.

    `member` is the holder's id and `chunk` the chunk's number in write order.
    """

    def __init__(self, message: str, *, member: str, chunk: int) -> None:
        super().__init__(message)
        self.member = member
        self.chunk = chunk


class WriterGone(SpillError):
    """A reader on another node cannot get a store's index: its writer left or
    cannot be reached. `member` is the writer's id."""

    def __init__(self, message: str, *, member: str) -> None:
        super().__init__(message)
        self.member = member
