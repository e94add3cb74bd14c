"""The lease fingerprint rules in one process: which fingerprints a keyring
verifies, an election that refuses a lease of other keys (and reports it
once), the adoption of a lease nobody of its keyring contends for any more,
the fallback for a backend without fingerprints, and a sqlite file from
before them. Elections run under trio's MockClock over the memory store."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import pytest
import trio
import trio.testing

from hedgeplug.contracts import Fingerprinted, Lease
from hedgeplug.election import Election
from hedgeplug.keyring import CLEAR_FINGERPRINT, Keyring
from hedgeplug.lease_keys import ADOPT_AFTER_TTLS
from hedgeplug.lock.memory import MemoryLock, new_store
from hedgeplug.lock.sqlite import SqliteLock

TTL = 2.0


@attrs.frozen
class Timings:
    ttl: float = TTL
    margin: float = 0.25
    renew_every: float = TTL / 4
    retry_every: float = TTL / 4
    backoff_cap: float = TTL


def virtual(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def election(lock: Any, holder: str, keys: list[str] | None, counters: dict[str, int]) -> Election:
    def count(what: str) -> None:
        counters[what] = counters.get(what, 0) + 1

    keyring = Keyring(keys) if keys is not None else None
    return Election(
        lock, Timings(), holder=holder, address=lambda: f"addr-{holder}", now=anyio.current_time,
        on_change=lambda new, old: None, count=count,
        keyring=(lambda: keyring) if keyring is not None else None,
    )


def test_a_keyring_verifies_its_own_ids_and_records_without_a_fingerprint():
    ab, b = Keyring(["A", "B"]), Keyring(["B"])
    a_id, b_id = ab.ids
    assert ab.fingerprint == a_id and b.fingerprint == b_id
    assert ab.verifies(a_id) and ab.verifies(b_id) and ab.verifies("")
    assert not b.verifies(a_id) and not b.verifies(CLEAR_FINGERPRINT)
    assert Keyring().fingerprint == CLEAR_FINGERPRINT and Keyring().verifies(CLEAR_FINGERPRINT)
    assert not Keyring().verifies(a_id)


def test_a_held_lease_of_other_keys_is_reported_once_and_never_contended(caplog):
    caplog.set_level(logging.ERROR, "hedgeplug.election")

    async def main() -> None:
        store = new_store("fp-held")
        counters: dict[str, int] = {}
        first = store.acquire("lock", "a1", "addr-a1", TTL, Keyring(["A"]).fingerprint)
        assert first is not None
        b = election(MemoryLock(store, "lock", "b"), "b", ["B"], counters)
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.run)
            a_id = Keyring(["A"]).fingerprint
            lease = first
            for holder in ("a1", "a1", "a2", "a2"):  # another A node takes over: same keys, no new log
                await anyio.sleep(TTL * 0.6)
                if lease.holder == holder:
                    renewed = store.renew(lease, TTL)
                else:
                    store.release(lease)
                    renewed = store.acquire("lock", holder, f"addr-{holder}", TTL, a_id)
                assert renewed is not None, holder
                lease = renewed
            await anyio.sleep(TTL * 0.6)
            mismatch = b.keys.mismatch
            assert mismatch is not None and mismatch.holder == "a2"
            assert mismatch.fingerprint == Keyring(["A"]).fingerprint
            assert not b.is_leader and "acquired" not in counters
            tg.cancel_scope.cancel()
        assert counters["lease.key-mismatch"] == 1
        assert len([r for r in caplog.records if "do not match the cluster's" in r.message]) == 1

    virtual(main)


def test_a_lease_left_by_other_keys_is_adopted_only_after_it_stayed_free():
    async def main() -> None:
        store = new_store("fp-adopt")
        counters: dict[str, int] = {}
        old = store.acquire("lock", "a1", "addr-a1", TTL, Keyring(["A"]).fingerprint)
        assert old is not None
        store.release(old)
        b = election(MemoryLock(store, "lock", "b"), "b", ["B"], counters)
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.run)
            await anyio.sleep(ADOPT_AFTER_TTLS * TTL - TTL / 2)
            assert not b.is_leader and b.keys.mismatch is not None
            await anyio.sleep(TTL)
            assert b.is_leader, "the lease stayed free and was not adopted"
            assert b.keys.mismatch is None
            lease = store.current("lock")
            assert lease is not None and lease.fingerprint == Keyring(["B"]).fingerprint
            tg.cancel_scope.cancel()
        assert anyio.current_time() - started >= ADOPT_AFTER_TTLS * TTL
        assert counters["lease.adopted"] == 1

    virtual(main)


def test_a_renewal_stamps_the_holders_new_primary_key():
    async def main() -> None:
        store = new_store("fp-renew")
        keyring = [Keyring(["A", "B"])]
        counters: dict[str, int] = {}
        a = Election(
            MemoryLock(store, "lock", "a"), Timings(), holder="a", address=lambda: "addr-a",
            now=anyio.current_time, on_change=lambda new, old: None,
            count=lambda what: counters.__setitem__(what, counters.get(what, 0) + 1),
            keyring=lambda: keyring[0],
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run)
            await anyio.sleep(TTL)
            first = store.current("lock")
            assert a.is_leader and first is not None and first.fingerprint == Keyring(["A"]).fingerprint
            keyring[0] = Keyring(["B", "A"])  # step 2 of a rotation, applied from the key file
            await anyio.sleep(TTL / 2)
            renewed = store.current("lock")
            assert renewed is not None and renewed.token == first.token
            assert renewed.fingerprint == Keyring(["B"]).fingerprint
            tg.cancel_scope.cancel()

    virtual(main)


class PlainLock:
    """A third-party backend from before fingerprints: acquire takes no keyword."""

    def __init__(self, inner: MemoryLock) -> None:
        self.inner = inner

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:
        return await self.inner.acquire(holder, address, ttl)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        return await self.inner.renew(lease, ttl)

    async def release(self, lease: Lease) -> None:
        await self.inner.release(lease)

    async def current(self) -> Lease | None:
        return await self.inner.current()

    async def aclose(self) -> None:
        await self.inner.aclose()


class OldSubclass(MemoryLock):
    """A subclass that overrides acquire with the signature from before fingerprints."""

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:  # type: ignore[override]
        return await super().acquire(holder, address, ttl)


@pytest.mark.parametrize("kind", [PlainLock, OldSubclass])
def test_a_backend_without_fingerprints_still_elects_with_a_warning(caplog, kind):
    caplog.set_level(logging.WARNING, "hedgeplug.election")

    async def main() -> None:
        store = new_store("fp-plain")
        lock = PlainLock(MemoryLock(store, "lock", "a")) if kind is PlainLock else OldSubclass(store, "lock", "a")
        assert isinstance(lock, Fingerprinted) == (kind is OldSubclass)
        a = election(lock, "a", ["A"], {})
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run)
            await anyio.sleep(TTL)
            assert a.is_leader and a.keys.mismatch is None
            tg.cancel_scope.cancel()

    virtual(main)
    assert any("keeps no key fingerprint" in r.message for r in caplog.records)


@pytest.mark.anyio
async def test_a_sqlite_file_from_before_fingerprints_gains_the_column(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE hedgeplug_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL,"
            " address TEXT NOT NULL, token INTEGER NOT NULL, ttl REAL NOT NULL, expires REAL NOT NULL)"
        )
        conn.execute("INSERT INTO hedgeplug_lease VALUES ('lock', '', '', 7, 1.0, 0)")
    lock = SqliteLock(str(path), "lock")
    try:
        assert await lock.last_fingerprint() == ""
        lease = await lock.acquire("n1", "addr", 5.0, fingerprint="1a2b3c4d")
        assert lease is not None and lease.token == 8 and lease.fingerprint == "1a2b3c4d"
        again = SqliteLock(str(path), "lock")  # a second process opening the migrated file
        try:
            seen = await again.current()
            assert seen is not None and seen.fingerprint == "1a2b3c4d"
        finally:
            await again.aclose()
    finally:
        await lock.aclose()
