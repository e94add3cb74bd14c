"""A node's two local tiers, each with a hard byte limit.

Room is reserved before a piece is stored (and before any await), so
concurrent puts can never take a tier past its limit: a piece that does not
fit is refused, never stored "for now". Pieces are keyed by (store, seq).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from .errors import SpillError


class MemoryTier:
    """Pieces held as bytes objects; `used` counts their lengths."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._stores: dict[str, dict[int, bytes]] = {}

    def try_put(self, store: str, seq: int, data: bytes) -> bool:
        if self.used + len(data) > self.limit:
            return False
        self._stores.setdefault(store, {})[seq] = data
        self.used += len(data)
        self.peak = max(self.peak, self.used)
        return True

    def reserve(self, want: int) -> int:
        """Set aside up to `want` bytes for a writer's credit; how many were set aside."""
        granted = max(0, min(want, self.limit - self.used))
        self.used += granted
        self.peak = max(self.peak, self.used)
        return granted

    def release(self, size: int) -> None:
        self.used -= size

    def put_reserved(self, store: str, seq: int, data: bytes) -> None:
        """Store a piece in room already reserved (and counted) for it."""
        pieces = self._stores.setdefault(store, {})
        old = pieces.get(seq)
        if old is not None:  # a piece sent again replaces the old one
            self.used -= len(old)
        pieces[seq] = data

    def get(self, store: str, seq: int) -> bytes | None:
        return self._stores.get(store, {}).get(seq)

    def remove(self, store: str, seq: int) -> bool:
        data = self._stores.get(store, {}).pop(seq, None)
        if data is None:
            return False
        self.used -= len(data)
        return True

    def drop(self, store: str) -> int:
        pieces = self._stores.pop(store, {})
        freed = sum(len(p) for p in pieces.values())
        self.used -= freed
        return freed

    def measured(self) -> int:
        """The real size of the held objects (headers included), for checks."""
        return sum(sys.getsizeof(p) for pieces in self._stores.values() for p in pieces.values())


class _File:
    """One store's append-only file; closed once dropped and no read or write is in flight.

    `charged` is what this file counts against the tier's limit: every byte
    reserved for it, written or in flight, until the store is dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        self.end = 0
        self.charged = 0
        self.users = 0
        self.dropped = False
        self.pieces: dict[int, tuple[int, int]] = {}

    def release(self) -> None:
        self.users -= 1
        if self.dropped and self.users == 0:
            os.close(self.fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _read_exactly(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"short read: {len(data)} of {length} bytes at offset {offset}")
    return data


class DiskTier:
    """Pieces in one append-only file per store under `directory`; `used`
    counts every byte written or being written to a store's file until the
    store is dropped (a removed piece's bytes stay in the file, so they stay
    counted: the limit bounds the disk really used)."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._files: dict[str, _File] = {}
        self._names = 0

    def _file(self, store: str) -> _File:
        f = self._files.get(store)
        if f is None:
            self._names += 1
            f = self._files[store] = _File(self.directory / f"store-{self._names}.spill")
        return f

    def reserve(self, want: int) -> int:
        """Set aside up to `want` bytes for a writer's credit; how many were set aside."""
        granted = max(0, min(want, self.limit - self.used))
        self.used += granted
        self.peak = max(self.peak, self.used)
        return granted

    def release(self, size: int) -> None:
        self.used -= size

    async def try_put(self, store: str, seq: int, data: bytes) -> bool:
        if self.used + len(data) > self.limit:
            return False
        self.reserve(len(data))  # before the write starts: concurrent puts cannot overshoot
        return await self.put_reserved(store, seq, data)

    async def put_reserved(self, store: str, seq: int, data: bytes) -> bool:
        """Write a piece into room already reserved (and counted) for it; the
        room then belongs to the store's file, freed with the store."""
        size = len(data)
        try:
            f = self._file(store)
        except OSError as exc:
            self.used -= size
            raise SpillError(f"cannot create a spill file in {self.directory}: {exc}") from None
        f.charged += size
        offset = f.end
        f.end += size
        f.users += 1
        try:
            await anyio.to_thread.run_sync(_write_all, f.fd, data, offset)
        except OSError as exc:
            if not f.dropped:
                self.used -= size
                f.charged -= size
            raise SpillError(f"cannot write to {f.path}: {exc}") from None
        finally:
            f.release()
        if not f.dropped:
            f.pieces[seq] = (offset, size)
        return True

    async def get(self, store: str, seq: int) -> bytes | None:
        f = self._files.get(store)
        where = f.pieces.get(seq) if f is not None else None
        if f is None or where is None:
            return None
        offset, size = where
        f.users += 1
        try:
            return await anyio.to_thread.run_sync(_read_exactly, f.fd, size, offset)
        except OSError as exc:
            raise SpillError(f"cannot read {f.path}: {exc}") from None
        finally:
            f.release()

    def remove(self, store: str, seq: int) -> bool:
        f = self._files.get(store)
        return f is not None and f.pieces.pop(seq, None) is not None

    def drop(self, store: str) -> int:
        f = self._files.pop(store, None)
        if f is None:
            return 0
        f.dropped = True
        freed, f.charged = f.charged, 0
        self.used -= freed
        f.pieces.clear()
        try:
            os.unlink(f.path)
        except OSError:
            pass
        if f.users == 0:
            os.close(f.fd)
        return freed

    def file_bytes(self) -> int:
        """The real size of the store files on disk, for checks."""
        return sum(os.fstat(f.fd).st_size for f in self._files.values())
