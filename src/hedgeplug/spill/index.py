"""A store's index (piece -> holder, chunk) and how readers on other nodes get it.

The writer keeps the index; a reader anywhere asks the writer for it on a
stream: ``{"op": "index", "name": ...}``. The writer first waits until every
member confirmed the pieces sent to it (so the read cannot overtake a piece
in flight), then sends ``["index", key, pieces]`` and the index in pages of
at most PAGE pieces, ``["page", [[holder, count], ...], lasts]`` (holders
run-length coded, `lasts` one byte per piece: 1 if it ends its chunk). A
writer that does not write the name answers ``["absent"]``, one whose store
was deleted or expired ``["error", why]``. A reader that does not know the writer asks every live
member ``{"op": "find", "name": ...}`` first.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

import anyio
import attrs

from ..errors import HedgeplugError
from .errors import SpillError, WriterGone

PAGE = 8192  # pieces per index message: a few KiB even for 1-byte chunks
FIND_TIMEOUT = 5.0
INDEX_TIMEOUT = 30.0  # the writer may be waiting for members to confirm pieces
UNREACHABLE = (HedgeplugError, TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError)


@attrs.frozen
class Piece:
    holder: str
    size: int
    chunk: int
    last: bool


def index_pages(pieces: list[Piece]) -> Iterator[list[Any]]:
    """The messages that carry `pieces` to a reader (after the header)."""
    for start in range(0, len(pieces), PAGE):
        page = pieces[start : start + PAGE]
        runs = [[holder, sum(1 for _ in group)] for holder, group in groupby(page, key=lambda p: p.holder)]
        yield ["page", runs, bytes(p.last for p in page)]


class IndexReader:
    """Rebuilds the pieces from the pages, in order."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self._chunk = 0

    def add(self, message: Any) -> None:
        if not (isinstance(message, list) and len(message) == 3 and message[0] == "page"):
            raise SpillError(f"malformed spill index page {message!r:.80}")
        _, runs, lasts = message
        holders = _expand(runs)
        if not isinstance(lasts, bytes) or len(lasts) != len(holders):
            raise SpillError("malformed spill index page: holders and chunk ends differ in length")
        for holder, last in zip(holders, lasts, strict=True):
            self.pieces.append(Piece(holder, 0, self._chunk, bool(last)))
            if last:
                self._chunk += 1


def _expand(runs: Any) -> list[str]:
    if not isinstance(runs, list):
        raise SpillError("malformed spill index page: runs are not a list")
    holders: list[str] = []
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and isinstance(run[0], str) and isinstance(run[1], int)):
            raise SpillError(f"malformed spill index run {run!r:.80}")
        if not 0 < run[1] <= PAGE:
            raise SpillError(f"spill index run of {run[1]} pieces is out of range")
        holders.extend([run[0]] * run[1])
    return holders


async def find_writer(node: Any, channel: Any, name: str) -> str:
    """The id of the one live member that writes the store `name`."""
    found: list[str] = []

    async def ask(member: Any) -> None:
        try:
            with anyio.fail_after(FIND_TIMEOUT):
                if await channel.request(member.address, {"op": "find", "name": name}, FIND_TIMEOUT) is True:
                    found.append(member.id)
        except UNREACHABLE:
            pass  # not serving spill or not reachable: it cannot be the writer we can read from

    async with anyio.create_task_group() as tg:
        for member in node.view.live:
            tg.start_soon(ask, member)
    if not found:
        raise SpillError(f"no live member writes a spill store named {name!r}")
    if len(found) > 1:
        raise SpillError(
            f"spill store {name!r} is written by several members ({', '.join(sorted(found))}): name the writer"
        )
    return found[0]


async def fetch_index(node: Any, channel: Any, name: str, writer: str) -> tuple[str, list[Piece]]:
    """The store key and its pieces, from the writer (WriterGone when it is not there)."""
    member = node.view.get(writer)
    if member is None:
        raise WriterGone(
            f"spill store {name!r}: its writer {writer} is not a member of the cluster", member=writer
        )
    reader = IndexReader()
    try:
        with anyio.fail_after(INDEX_TIMEOUT):
            stream = await channel.open_stream(member.address, {"op": "index", "name": name})
            async with stream:
                header = await stream.receive()
                if header == ["absent"]:
                    raise SpillError(f"member {writer} writes no spill store named {name!r}")
                if isinstance(header, list) and len(header) == 2 and header[0] == "error":
                    raise SpillError(f"{writer}: {header[1]}")
                if not (isinstance(header, list) and len(header) == 3 and header[0] == "index"):
                    raise SpillError(f"{writer} answered {header!r:.80} for the index of {name!r}")
                _, key, total = header
                if not isinstance(key, str) or not isinstance(total, int) or total < 0:
                    raise SpillError(f"{writer} sent a malformed index header for {name!r}")
                while len(reader.pieces) < total:
                    reader.add(await stream.receive())
                if len(reader.pieces) != total:
                    raise SpillError(f"{writer} sent more index pages than it announced for {name!r}")
    except SpillError:
        raise
    except UNREACHABLE as exc:
        raise WriterGone(
            f"spill store {name!r}: its writer {writer} could not be reached for the index ({exc!r})",
            member=writer,
        ) from None
    return key, reader.pieces
