"""The contract of the optional FencedLog capability (the fenced key/value log).

A backend that offers it adds `FencedLogContract` beside the lock contract,
with the same `make_lock` fixture (a new backend on the same store and a
fresh lock name per test)::

    class TestMyLock(LockBackendContract, FencedLogContract):
        ...

What it checks: appends with the current token get versions 1, 2, ... per
key and strictly increasing revisions; reads newest first, oldest first and
limited; keys by prefix (a key is never confused with a longer one sharing
its prefix); entries since a revision in revision order; the fence: an
append or trim with a token that is not the current lease's (after a
takeover, after a release, or never granted) writes nothing; appenders
running at once on several backends lose nothing and share no version; and
trim keeps exactly the newest entries, with versions continuing after it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from hedgeplug.contracts import FencedLog, LogEntry

from .lock_contract import _ContractBase

__all__ = ["FencedLogContract"]

COMMIT_CLOCK_SLACK = 120.0  # committed_at vs the test's wall clock: a sanity bound only


class FencedLogContract(_ContractBase):
    """For FencedLog backends."""

    appenders: int = 4
    # committed_at is wall-clock time (seconds since the epoch); False for a
    # store on a virtual clock (the simulator's memory store).
    wall_clock_commits: bool = True
    appends_each: int = 5

    async def _lead(self, lock: Any, holder: str = "node-a") -> int:
        lease = await lock.acquire(holder, f"addr-{holder}", self.ttl)
        assert lease is not None, f"{holder} could not take a free lock"
        return int(lease.token)

    @pytest.mark.anyio
    async def test_append_and_read_versions(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            assert isinstance(a, FencedLog)
            with anyio.fail_after(self.call_bound * 3):
                assert await b.log_read("k") == []
                token = await self._lead(a)
                before = time.time()  # clock-ok: test's wall clock, a sanity bound
                written: list[LogEntry] = []
                for value in (b"one", b"", b"\x00\xffthree"):
                    entry = await a.log_append(token, "k", value)
                    assert entry is not None, "append with the current token refused"
                    written.append(entry)
                assert [e.version for e in written] == [1, 2, 3]
                assert [e.value for e in written] == [b"one", b"", b"\x00\xffthree"]
                assert all(e.key == "k" and e.token == token for e in written)
                revisions = [e.revision for e in written]
                assert revisions == sorted(set(revisions)), "revisions must strictly increase"
                for e in written if self.wall_clock_commits else ():
                    assert abs(e.committed_at - before) < COMMIT_CLOCK_SLACK, e
                assert [e.committed_at for e in written] == sorted(e.committed_at for e in written)
                newest = await b.log_read("k")
                assert newest == list(reversed(written))
                assert await b.log_read("k", limit=1) == [written[-1]]
                assert await b.log_read("k", limit=2, oldest_first=True) == written[:2]
                assert await b.log_read("k", oldest_first=True) == written

    @pytest.mark.anyio
    async def test_keys_since_and_last_revision(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound * 3):
                assert await b.log_keys("") == []
                start = await b.log_last_revision()
                token = await self._lead(a)
                order = ["a", "a/b", "ab", "z", "a", "ä/ü"]
                entries = []
                for i, key in enumerate(order):
                    entry = await a.log_append(token, key, str(i).encode())
                    assert entry is not None
                    entries.append(entry)
                assert [e.version for e in entries] == [1, 1, 1, 1, 2, 1]
                assert await b.log_keys("") == sorted(set(order))
                assert await b.log_keys("a") == ["a", "a/b", "ab"]
                assert await b.log_keys("a/") == ["a/b"]
                assert await b.log_keys("nothing") == []
                assert [e.value for e in await b.log_read("a")] == [b"4", b"0"], (
                    "read of 'a' must not include 'a/b' or 'ab'"
                )
                assert await b.log_since(start, "", 100) == entries
                assert await b.log_since(start, "a", 100) == [entries[i] for i in (0, 1, 2, 4)]
                assert await b.log_since(entries[1].revision, "", 2) == entries[2:4]
                assert await b.log_since(entries[-1].revision, "", 100) == []
                last = await b.log_last_revision()
                assert last >= entries[-1].revision

    @pytest.mark.anyio
    async def test_stale_token_is_refused_after_a_takeover(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound * 3 + self.ttl * 2):
                old = await self._lead(a, "node-a")
                assert await a.log_append(old, "k", b"from a") is not None
                # A token never granted is refused too.
                assert await a.log_append(old + 1000, "k", b"forged") is None
                await anyio.sleep(self.ttl + self.clock_slack + 0.1)
                new = None
                with anyio.fail_after(self.ttl * 3 + self.call_bound):
                    while new is None:  # a store may reap an expired lease a little late
                        lease = await b.acquire("node-b", "addr-b", self.ttl)
                        new = None if lease is None else lease.token
                        if new is None:
                            await anyio.sleep(0.1)
                assert new > old
                assert await a.log_append(old, "k", b"stale") is None, "stale token accepted"
                assert await a.log_trim(old, "k", 1) is None, "trim with a stale token accepted"
                accepted = await b.log_append(new, "k", b"from b")
                assert accepted is not None and accepted.version == 2 and accepted.token == new
                assert [e.value for e in await a.log_read("k")] == [b"from b", b"from a"]

    @pytest.mark.anyio
    async def test_released_lease_writes_nothing(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 1) as (a,):
            with anyio.fail_after(self.call_bound * 3):
                lease = await a.acquire("node-a", "addr-a", self.ttl)
                assert lease is not None
                assert await a.log_append(lease.token, "k", b"held") is not None
                await a.release(lease)
                assert await a.log_append(lease.token, "k", b"released") is None
                assert [e.value for e in await a.log_read("k")] == [b"held"]

    @pytest.mark.anyio
    async def test_concurrent_appenders_lose_nothing(self, make_lock: Any) -> None:
        async with self.opened(make_lock, self.appenders) as backends:
            ttl = max(self.ttl, 10.0)  # the lease must outlast the appends
            lease = await backends[0].acquire("node-a", "addr-a", ttl)
            assert lease is not None
            got: list[LogEntry] = []

            async def append(lock: Any, n: int) -> None:
                for i in range(self.appends_each):
                    entry = await lock.log_append(lease.token, "shared", f"{n}-{i}".encode())
                    assert entry is not None
                    got.append(entry)

            with anyio.fail_after(self.call_bound * self.appends_each * 2):
                async with anyio.create_task_group() as tg:
                    for n, lock in enumerate(backends):
                        tg.start_soon(append, lock, n)
            total = self.appenders * self.appends_each
            assert sorted(e.version for e in got) == list(range(1, total + 1))
            assert len({e.revision for e in got}) == total
            stored = await backends[0].log_read("shared", oldest_first=True)
            assert sorted(stored, key=lambda e: e.revision) == sorted(got, key=lambda e: e.revision)
            # Version order is commit order: revisions increase with versions.
            assert [e.revision for e in stored] == sorted(e.revision for e in stored)
            await backends[0].release(lease)

    @pytest.mark.anyio
    async def test_trim_keeps_the_newest(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound * 3):
                token = await self._lead(a)
                for i in range(5):
                    assert await a.log_append(token, "k", str(i).encode()) is not None
                assert await a.log_append(token, "other", b"x") is not None
                assert await a.log_trim(token, "k", 2) == 3
                assert [(e.version, e.value) for e in await b.log_read("k")] == [(5, b"4"), (4, b"3")]
                assert await a.log_trim(token, "k", 2) == 0
                later = await a.log_append(token, "k", b"5")
                assert later is not None and later.version == 6
                assert [e.value for e in await b.log_read("other")] == [b"x"]
                with pytest.raises(ValueError):
                    await a.log_trim(token, "k", 0)
