"""The lease file: a JSON document of lock records, changed only under an
exclusive flock on a companion guard file ``<path>.lock``.

A change writes a new document to ``<path>.tmp``, fsyncs it and renames it
over ``<path>``: a reader sees the old document or the new one, never half of
one, and a crash mid-write leaves the old one in place. The flock is taken on
the guard file, not on ``<path>``, because the rename replaces ``<path>``'s
inode and a lock on the old inode would no longer exclude anybody.

The flock is only ever tried (LOCK_NB) in a worker thread; waiting for it is
done by retrying from the event loop, so a cancelled caller stops at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from hedgeplug.plugin import StoreError, run_in_worker

T = TypeVar("T")

FORMAT = "hedgeplug-filelock 1"
RETRY = 0.005  # seconds between attempts while another process holds the flock

Records = dict[str, dict[str, Any]]  # lock name -> {"holder", "address", "token", "ttl", "expires"}


_FIELDS = {"holder": str, "address": str, "token": int, "ttl": (int, float), "expires": (int, float)}


def _is_record(record: Any) -> bool:
    return isinstance(record, dict) and all(
        isinstance(record.get(name), kind) for name, kind in _FIELDS.items()
    )


class _Busy:
    """Another process holds the flock."""


BUSY = _Busy()


class LeaseFile:
    def __init__(self, path: str, *, lock_timeout: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self._limiter = anyio.CapacityLimiter(1)

    def error(self, message: object) -> StoreError:
        return StoreError(f"filelock store {self.path}: {message}")

    async def update(self, change: Callable[[Records], tuple[T, bool]]) -> T:
        """Apply `change` to the records under the flock; it returns (result, changed).

        Retries while another process holds the flock, for up to lock_timeout."""
        give_up_at = anyio.current_time() + self.lock_timeout
        while True:
            result = await run_in_worker(lambda: self._try_update(change), limiter=self._limiter)
            if not isinstance(result, _Busy):
                return result
            if anyio.current_time() >= give_up_at:
                raise self.error(f"still locked by another process after lock_timeout {self.lock_timeout}s")
            await anyio.sleep(RETRY)

    async def read(self) -> Records:
        """The records as last written (no flock needed: the file is replaced whole)."""
        return await run_in_worker(self.read_now)

    def read_now(self) -> Records:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self.error(f"cannot read: {exc.strerror}") from None
        try:
            document = json.loads(raw)
        except ValueError:
            raise self.error("file exists but is not a hedgeplug filelock file (not JSON)") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise self.error(f"file exists but is not a hedgeplug filelock file (no format {FORMAT!r})")
        records = document.get("locks")
        if not isinstance(records, dict) or not all(map(_is_record, records.values())):
            raise self.error("damaged: 'locks' is not an object of lock records")
        return records

    # ------------------------------------------------------------ in the worker thread

    def _try_update(self, change: Callable[[Records], tuple[T, bool]]) -> T | _Busy:
        try:
            guard = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self.error(f"cannot open its guard file: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return BUSY
            records = self.read_now()
            result, changed = change(records)
            if changed:
                self._write(records)
            return result
        finally:
            os.close(guard)  # also drops the flock

    def _write(self, records: Records) -> None:
        data = json.dumps({"format": FORMAT, "locks": records}, sort_keys=True).encode()
        temporary = self.path + ".tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                # Durable before it is visible: a token once handed out is never handed out again.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise self.error(f"cannot write: {exc.strerror}") from None
