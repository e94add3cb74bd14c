"""The lease operations of the `filelock` backend.

One record per lock name, never deleted. ``token`` is the fencing token:
every successful acquire adds one, so it strictly increases across holders
for the life of the file (deleting the file starts tokens again at 1). A
released lease keeps its record and token with an empty holder, and its
``fingerprint`` (the holder's key id) for the next contender to check; a
record from before fingerprints has none, read as "".

Expiry is judged by the host's monotonic clock: every process on the host
reads the same one, and it never jumps with NTP or a manual change. After a
reboot it starts again near zero, so a stored expiry further away than its
own ttl is treated as expired (no lease can legitimately outlast its ttl).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from hedgeplug.plugin import Lease

from .store import LeaseFile, Records

WATCH_INTERVAL = 0.1  # seconds between watch polls


def store_clock() -> float:
    return time.monotonic()  # clock-ok: the store clock of a one-host store


def _fingerprint(record: dict[str, Any]) -> str:
    value = record.get("fingerprint", "")
    return value if isinstance(value, str) else ""


def is_live(record: dict[str, Any], now: float) -> bool:
    expires, ttl = float(record["expires"]), float(record["ttl"])
    return record["holder"] != "" and now < expires <= now + ttl


class FileLock:
    """LockBackend + Watchable + Fingerprinted over one lease file."""

    def __init__(self, path: str, lock_name: str, *, lock_timeout: float = 1.0) -> None:
        self.path = path
        self.lock_name = lock_name
        self._file = LeaseFile(path, lock_timeout=lock_timeout)

    def _lease(self, record: dict[str, Any], now: float) -> Lease:
        return Lease(
            lock=self.lock_name,
            holder=record["holder"],
            address=record["address"],
            token=int(record["token"]),
            ttl=float(record["ttl"]),
            remaining=max(0.0, float(record["expires"]) - now),
            fingerprint=_fingerprint(record),
        )

    # ------------------------------------------------------------ LockBackend

    async def acquire(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Lease | None:
        def change(records: Records) -> tuple[Lease | None, bool]:
            now = store_clock()
            record = records.get(self.lock_name)
            if record is not None and is_live(record, now) and record["holder"] != holder:
                return None, False
            token = (int(record["token"]) if record else 0) + 1
            record = {
                "holder": holder, "address": address, "token": token, "ttl": ttl,
                "expires": now + ttl, "fingerprint": fingerprint,
            }
            records[self.lock_name] = record
            return self._lease(record, now), True

        return await self._file.update(change)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        def change(records: Records) -> tuple[Lease | None, bool]:
            now = store_clock()
            record = records.get(self.lock_name)
            if not self._still_ours(record, lease, now):
                return None, False
            assert record is not None
            record.update(ttl=ttl, expires=now + ttl, fingerprint=lease.fingerprint)
            return self._lease(record, now), True

        return await self._file.update(change)

    async def release(self, lease: Lease) -> None:
        def change(records: Records) -> tuple[None, bool]:
            record = records.get(self.lock_name)
            ours = record is not None and (record["holder"], int(record["token"])) == (lease.holder, lease.token)
            if ours:
                assert record is not None
                record.update(holder="", address="", expires=0.0)
            return None, ours

        await self._file.update(change)

    async def current(self) -> Lease | None:
        records = await self._file.read()
        now = store_clock()
        record = records.get(self.lock_name)
        if record is None or not is_live(record, now):
            return None
        return self._lease(record, now)

    def local_only(self) -> str:
        """LocalOnly: the lease file lives on this host; nodes elsewhere cannot share it."""
        return f"lease file {self.path}"

    async def last_fingerprint(self) -> str:
        record = (await self._file.read()).get(self.lock_name)
        return "" if record is None else _fingerprint(record)

    async def aclose(self) -> None:
        pass  # no connection or thread is kept between calls

    def _still_ours(self, record: dict[str, Any] | None, lease: Lease, now: float) -> bool:
        return (
            record is not None
            and (record["holder"], int(record["token"])) == (lease.holder, lease.token)
            and is_live(record, now)
        )

    # ------------------------------------------------------------ Watchable

    async def watch(self) -> AsyncIterator[None]:
        """Read the file every 100 ms; yield when the holder or token changes, or
        when the lease goes from live to free (release or expiry)."""

        async def state() -> tuple[str, int, bool] | None:
            record = (await self._file.read()).get(self.lock_name)
            if record is None:
                return None
            return (record["holder"], int(record["token"]), is_live(record, store_clock()))

        seen = await state()
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            now_seen = await state()
            if now_seen != seen:
                seen = now_seen
                yield
