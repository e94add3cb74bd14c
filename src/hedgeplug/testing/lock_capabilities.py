"""The contracts of the optional lock capabilities (watch, key fingerprints,
rows) and of a store's bad days (outage, stall, lost connections). Import
them from hedgeplug.testing.lock_contract, which describes each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest

from hedgeplug.contracts import Fingerprinted, Lease
from hedgeplug.errors import StoreError

from .lock_history import _ContractBase, _maybe_await, _now


class WatchableContract(_ContractBase):
    """For Watchable backends: watch() reports a release and an expiry promptly."""

    async def _first_change(self, watcher: Any, action: Callable[[], Any], bound: float) -> float:
        """Start watching, run `action`, return seconds from the action to the first yield."""
        changed = anyio.Event()
        acted_at = [0.0]
        seen_at = [0.0]

        async def watch() -> None:
            async for _ in watcher.watch():
                if acted_at[0]:
                    seen_at[0] = _now()
                    changed.set()
                    return

        with anyio.fail_after(bound):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await anyio.sleep(0.3)  # let the watch settle on the current state
                # Mark the start: a pushed watch (etcd) may yield before action() returns.
                acted_at[0] = _now()
                await action()
                await changed.wait()
                tg.cancel_scope.cancel()
        return seen_at[0] - acted_at[0]

    @pytest.mark.anyio
    async def test_watch_yields_after_release(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            ttl = max(self.ttl, 5.0)
            lease = await a.acquire("node-a", "addr-a", ttl)
            assert lease is not None
            took = await self._first_change(b, lambda: a.release(lease), self.call_bound)
            assert took < 1.0, f"release noticed after {took:.2f}s"

    @pytest.mark.anyio
    async def test_watch_yields_after_expiry(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            lease = await a.acquire("node-a", "addr-a", self.ttl)
            assert lease is not None

            async def nothing() -> None:
                return None

            took = await self._first_change(b, nothing, self.call_bound + self.ttl)
            assert took < self.ttl + 1.0, f"expiry noticed after {took:.2f}s"


class FingerprintedContract(_ContractBase):
    """For Fingerprinted backends: the lease record keeps the holder's key fingerprint."""

    @pytest.mark.anyio
    async def test_fingerprint_is_stored_renewed_and_outlives_the_lease(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            assert all(isinstance(backend, Fingerprinted) for backend in (a, b))
            with anyio.fail_after(self.call_bound + 3 * self.ttl):
                assert await b.last_fingerprint() == ""
                lease = await a.acquire("node-a", "addr-a", self.ttl, fingerprint="1a2b3c4d")
                assert lease is not None and lease.fingerprint == "1a2b3c4d"
                seen = await b.current()
                assert seen is not None and seen.fingerprint == "1a2b3c4d"
                assert await b.last_fingerprint() == "1a2b3c4d"
                # A renewal stamps the fingerprint it carries (the holder's primary key changed).
                renewed = await a.renew(attrs.evolve(lease, fingerprint="5e6f7a8b"), self.ttl)
                assert renewed is not None and renewed.fingerprint == "5e6f7a8b"
                seen = await b.current()
                assert seen is not None and seen.fingerprint == "5e6f7a8b"
                # Released: the record's fingerprint stays for the next contender to check.
                await a.release(renewed)
                assert await b.current() is None
                assert await b.last_fingerprint() == "5e6f7a8b"
                taken = await b.acquire("node-b", "addr-b", self.ttl, fingerprint="clear")
                assert taken is not None and taken.fingerprint == "clear"
                # Expired: the same.
                await anyio.sleep(self.ttl + self.clock_slack + 0.05)
                assert await a.current() is None
                assert await a.last_fingerprint() == "clear"
                # An acquire without a fingerprint (an older writer) stores none.
                plain = await a.acquire("node-a", "addr-a", self.ttl)
                assert plain is not None and plain.fingerprint == ""
                assert await b.last_fingerprint() == ""


class RowStorageContract(_ContractBase):
    """For RowStorage backends: versioned rows with compare-and-set."""

    @pytest.mark.anyio
    async def test_rows_versions_and_compare_and_set(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound):
                assert await a.row_get("k/1") is None
                first = await a.row_put("k/1", b"one", expect=0)
                assert first is not None and (first.value, first.version) == (b"one", 1)
                assert await b.row_put("k/1", b"again", expect=0) is None, "create-only overwrote"
                assert await b.row_put("k/1", b"stale", expect=5) is None, "CAS with wrong version"
                second = await b.row_put("k/1", b"two", expect=1)
                assert second is not None and second.version == 2
                assert await a.row_put("k/1", b"lost", expect=1) is None, "CAS lost update"
                third = await a.row_put("k/1", b"three")
                assert third is not None and third.version == 3
                got = await b.row_get("k/1")
                assert got is not None and (got.key, got.value, got.version) == ("k/1", b"three", 3)
                fresh = await a.row_put("k/2", b"\x00\xffbinary")
                assert fresh is not None and fresh.version == 1
                await a.row_put("other", b"x")
                scanned = await b.row_scan("k/")
                assert [(r.key, r.value) for r in scanned] == [
                    ("k/1", b"three"),
                    ("k/2", b"\x00\xffbinary"),
                ]
                assert await a.row_delete("k/1", expect=2) is False
                assert await a.row_delete("k/1", expect=3) is True
                assert await a.row_get("k/1") is None
                assert await a.row_delete("k/1") is False
                assert await a.row_delete("k/2") is True
                assert [r.key for r in await b.row_scan("")] == ["other"]

    @pytest.mark.anyio
    async def test_rows_concurrent_increments_lose_nothing(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 4) as backends:

            async def add(lock: Any, times: int) -> None:
                done = 0
                while done < times:
                    row = await lock.row_get("counter")
                    if row is None:
                        ok = await lock.row_put("counter", b"1", expect=0)
                    else:
                        ok = await lock.row_put(
                            "counter", str(int(row.value) + 1).encode(), expect=row.version
                        )
                    if ok is not None:
                        done += 1

            with anyio.fail_after(self.call_bound * 2):
                async with anyio.create_task_group() as tg:
                    for lock in backends:
                        tg.start_soon(add, lock, 10)
            row = await backends[0].row_get("counter")
            assert row is not None and int(row.value) == 40 and row.version == 40


class StoreOutageContract(_ContractBase):
    """Needs a `store_control` fixture with stop() and start()."""

    outage_call_bound: float = 10.0  # a call against a stopped store must fail within this

    @pytest.mark.anyio
    async def test_store_restart(self, make_lock: Any, store_control: Any) -> None:
        async with self.opened(make_lock, 3) as backends:
            a, b, c = backends
            lease = await a.acquire("node-a", "addr-a", self.ttl)
            assert lease is not None
            await _maybe_await(store_control.stop())
            try:
                with anyio.fail_after(self.outage_call_bound):
                    with pytest.raises(StoreError):
                        await a.renew(lease, self.ttl)
                    with pytest.raises(StoreError):
                        await b.acquire("node-b", "addr-b", self.ttl)
            finally:
                await _maybe_await(store_control.start())
            # After the store returns, contenders try the way the election does
            # until one takes the lock; then there must be exactly one holder.
            holder: Lease | None = None
            with anyio.fail_after(self.outage_call_bound + 3 * self.ttl):
                while holder is None:
                    for i, lock in enumerate(backends):
                        try:
                            if await lock.current() is None:
                                holder = await lock.acquire(f"node-{i}", f"addr-{i}", self.ttl * 4)
                        except StoreError:
                            pass  # still recovering
                        if holder is not None:
                            break
                    await anyio.sleep(0.05)
                for i, lock in enumerate(backends):
                    if f"node-{i}" != holder.holder:
                        assert await lock.acquire(f"node-{i}", f"addr-{i}", self.ttl) is None
                views = {(s.holder, s.token) for s in [await x.current() for x in backends] if s}
            assert views == {(holder.holder, holder.token)}
            assert holder.token > lease.token


class StallContract(_ContractBase):
    """Needs a `store_stall` fixture with stall() and resume()."""

    @pytest.mark.anyio
    async def test_abandoned_call_returns_promptly_during_a_stall(
        self, make_lock: Any, store_stall: Any
    ) -> None:
        async with self.opened(make_lock, 1) as (a,):
            ttl = max(self.ttl, 5.0)
            lease = await a.acquire("node-a", "addr-a", ttl)
            assert lease is not None
            await _maybe_await(store_stall.stall())
            try:
                started = _now()
                with anyio.move_on_after(0.3):
                    await a.renew(lease, ttl)
                    raise AssertionError("renewal succeeded while the store was stalled")
                assert _now() - started < 1.5, "a cancelled call kept the caller waiting"
            finally:
                await _maybe_await(store_stall.resume())
            with anyio.fail_after(self.call_bound):
                renewed = await a.renew(lease, ttl)
            assert renewed is not None and renewed.token == lease.token


class ConnectionLossContract(_ContractBase):
    """Needs `store_stall` and a `connection_breaker` fixture with sever(backend)."""

    @pytest.mark.anyio
    async def test_connection_lost_mid_renewal(
        self, make_lock: Any, store_stall: Any, connection_breaker: Any
    ) -> None:
        async with self.opened(make_lock, 1) as (a,):
            ttl = max(self.ttl, 5.0)
            lease = await a.acquire("node-a", "addr-a", ttl)
            assert lease is not None
            outcome: list[object] = []

            async def renew() -> None:
                try:
                    outcome.append(await a.renew(lease, ttl))
                except StoreError as exc:
                    outcome.append(exc)

            await _maybe_await(store_stall.stall())
            try:
                with anyio.fail_after(self.call_bound):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(renew)
                        await anyio.sleep(0.3)  # the renewal is now waiting in the store
                        await _maybe_await(connection_breaker.sever(a))
            finally:
                await _maybe_await(store_stall.resume())
            assert len(outcome) == 1 and isinstance(outcome[0], StoreError), outcome
            with anyio.fail_after(self.call_bound):
                renewed = await a.renew(lease, ttl)  # reconnects
            assert renewed is not None and renewed.token == lease.token
