"""The lock backend contract: tests every lock backend runs against itself.

A plugin author subclasses the classes that apply to the backend, inside a
test module, and provides fixtures::

    import pytest
    from hedgeplug.testing.lock_contract import (
        LockBackendContract, RowStorageContract, WatchableContract,
    )

    class TestMyLock(LockBackendContract, WatchableContract, RowStorageContract):
        ttl = 0.5          # lease ttl the tests use; raise it if your store has a minimum

        @pytest.fixture
        def make_lock(self, tmp_path):
            # Each call returns a NEW backend instance on the SAME store and
            # lock name, like another process would open; the lock is free at
            # the start of every test (use a fresh lock name or store per test).
            name = f"contract-{uuid.uuid4().hex}"
            return lambda: MyLock(dsn, name)

Tests are `@pytest.mark.anyio` coroutines; each is bounded (a few seconds)
and closes the backends it opened.

The classes:

- `LockBackendContract` (every backend): holder discovery through current()
  (id and address), refusal while held, a higher token for a same-holder
  re-acquire, renewal, takeover after expiry, release then immediate
  takeover, refusal of a renewal after the lease was lost, strictly increasing
  tokens across holders, a cancelled call leaving the backend usable, and
  mutual exclusion with `contenders` backends hammering one lock for
  `hammer_seconds`. It also fails when the backend has a capability
  (Watchable, RowStorage) whose contract class the subclass did not include.
- `WatchableContract`: watch() yields after a release, and after an expiry.
- `FingerprintedContract`: the key fingerprint given to acquire, and the one
  a renewal carries, is stored and read back by every reader; it survives a
  release and an expiry (`last_fingerprint`); a new holder replaces it; an
  acquire without one stores "".
- `RowStorageContract`: create-only, compare-and-set, unconditional writes,
  versions starting at 1 and increasing by one, delete, prefix scan.
- `StoreOutageContract` needs a `store_control` fixture with ``stop()`` and
  ``start()`` (plain or async): calls raise StoreError while the store is
  away, and after it returns exactly one contender holds the lock.
- `StallContract` needs a `store_stall` fixture with ``stall()`` and
  ``resume()`` that make store calls on the lock hang (for example another
  client holding the row locked): a call whose caller gives up returns
  promptly and the backend stays usable.
- `ConnectionLossContract` (backends with connections) needs `store_stall`
  and a `connection_breaker` fixture with ``sever(backend)`` that kills that
  backend's server-side connections: a renewal in flight fails with
  StoreError, and the next call reconnects.

How mutual exclusion is checked: every contender records, with the test's
clock, when it sent and got the answer of each successful acquire and renew,
each release, and each current() reading. `check_history` then verifies that
no token was granted twice; that an acquire sent after another returned got a
higher token; that in token order a different holder only appears after the
previous lease was released, or after its last successful renewal was SENT
plus the ttl (the earliest the store could have let it expire); that no
renewal of a lease succeeded after the next lease was granted; and that
current() never went back to an older token. `clock_slack` allows for the
store's clock and the test's clock disagreeing by a few milliseconds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from random import Random
from typing import Any

import anyio
import attrs
import pytest

from hedgeplug.contracts import FencedLog, Fingerprinted, Lease, LockBackend, RowStorage, Watchable
from hedgeplug.errors import StoreError

__all__ = [
    "ConnectionLossContract",
    "FingerprintedContract",
    "Grant",
    "History",
    "LockBackendContract",
    "Observation",
    "Release",
    "Renewal",
    "RowStorageContract",
    "StallContract",
    "StoreOutageContract",
    "WatchableContract",
    "check_history",
    "contend",
    "graceful_failover_seconds",
]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _now() -> float:
    return anyio.current_time()


class _Opened:
    """Opens n backends from make_lock and closes them all on exit."""

    def __init__(self, make_lock: Callable[[], LockBackend], n: int) -> None:
        self.make_lock = make_lock
        self.n = n
        self.backends: list[Any] = []

    async def __aenter__(self) -> list[Any]:
        self.backends = [self.make_lock() for _ in range(self.n)]
        return self.backends

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            for backend in self.backends:
                await backend.aclose()


# ------------------------------------------------------------ history checking


@attrs.frozen
class Grant:
    holder: str
    token: int
    ttl: float
    sent: float
    returned: float


@attrs.frozen
class Renewal:
    holder: str
    token: int
    ttl: float
    sent: float
    returned: float


@attrs.frozen
class Release:
    holder: str
    token: int
    sent: float


@attrs.frozen
class Observation:
    holder: str | None
    token: int | None
    sent: float
    returned: float


@attrs.define
class History:
    grants: list[Grant] = attrs.Factory(list)
    renewals: list[Renewal] = attrs.Factory(list)
    releases: list[Release] = attrs.Factory(list)
    observations: list[Observation] = attrs.Factory(list)
    store_errors: int = 0
    calls: int = 0


def check_history(history: History, *, clock_slack: float = 0.02) -> list[str]:
    """Every way `history` breaks mutual exclusion or token order; empty when sound."""
    problems: list[str] = []
    by_token: dict[int, Grant] = {}
    for g in history.grants:
        if g.token in by_token:
            problems.append(f"token {g.token} granted twice: {by_token[g.token]} and {g}")
        by_token[g.token] = g
    ordered = sorted(history.grants, key=lambda g: g.returned)
    for later in history.grants:
        for earlier in ordered:
            if earlier.returned >= later.sent:
                break
            if later.token <= earlier.token:
                problems.append(f"token went back: {later} was sent after {earlier} returned")
    for r in history.renewals:
        granted = by_token.get(r.token)
        if granted is None or granted.holder != r.holder:
            problems.append(f"renewal of a lease never granted: {r}")
    tokens = sorted(by_token)
    for prev_token, next_token in zip(tokens, tokens[1:], strict=False):
        prev, nxt = by_token[prev_token], by_token[next_token]
        renews = [r for r in history.renewals if r.token == prev_token]
        for r in renews:
            if r.sent > nxt.returned + clock_slack:
                problems.append(f"{r} succeeded after token {next_token} was granted ({nxt})")
        if nxt.holder == prev.holder:
            continue  # a holder may re-take its own live lease (with a new token)
        released = any(
            rel.token == prev_token and rel.sent <= nxt.returned for rel in history.releases
        )
        last_sent, last_ttl = prev.sent, prev.ttl
        for r in renews:
            if r.sent > last_sent:
                last_sent, last_ttl = r.sent, r.ttl
        if not released and nxt.returned + clock_slack < last_sent + last_ttl:
            problems.append(
                f"overlap: {nxt} returned {last_sent + last_ttl - nxt.returned:.3f}s before "
                f"token {prev_token} of {prev.holder} could expire (not released)"
            )
    for o in history.observations:
        if o.token is None:
            continue
        granted = by_token.get(o.token)
        if granted is not None and granted.holder != o.holder:
            problems.append(
                f"current() showed holder {o.holder} for token {o.token} of {granted.holder}"
            )
        newest_before = max((g.token for g in history.grants if g.returned < o.sent), default=0)
        if o.token < newest_before:
            problems.append(
                f"current() went back to token {o.token} after token {newest_before} was granted"
            )
    return problems


async def contend(
    lock: Any,
    me: str,
    ttl: float,
    deadline: float,
    history: History,
    rng: Random,
    clock: Callable[[], float] = _now,
    more: Callable[[], bool] | None = None,
) -> None:
    """One contender of the mutual exclusion check: read, take when free (and
    sometimes try when held), keep the lease for a few renewals, then release
    it or abandon it to expire; record every success in `history` with `clock` (which must be comparable between
    contenders: the same process, or the host's monotonic clock). Past
    `deadline` it goes on while `more()` says the run has not covered enough."""
    address = f"127.0.0.1:{20000 + rng.randrange(10000)}"
    while clock() < deadline or (more is not None and more()):
        try:
            history.calls += 1
            sent = clock()
            seen = await lock.current()
            history.observations.append(
                Observation(
                    seen.holder if seen else None, seen.token if seen else None, sent, clock()
                )
            )
            if seen is not None and seen.holder != me and rng.random() < 0.7:
                await anyio.sleep(rng.uniform(0.002, 0.02))
                continue
            # Otherwise try to take it, also (blindly) 30% of the times it looked held:
            # the store alone must refuse a live lease of another holder.
            history.calls += 1
            sent = clock()
            lease = await lock.acquire(me, address, ttl)
            if lease is None:
                continue
            assert lease.holder == me
            history.grants.append(Grant(me, lease.token, ttl, sent, clock()))
            for _ in range(rng.randint(0, 3)):
                await anyio.sleep(ttl / 4)
                history.calls += 1
                sent = clock()
                renewed = await lock.renew(lease, ttl)
                if renewed is None:
                    break
                assert renewed.token == lease.token
                history.renewals.append(Renewal(me, lease.token, ttl, sent, clock()))
            if rng.random() < 0.6:
                history.releases.append(Release(me, lease.token, clock()))
                history.calls += 1
                await lock.release(lease)
                await anyio.sleep(rng.uniform(0.0, ttl / 2))  # give the others a chance
            else:
                await anyio.sleep(rng.uniform(0.5 * ttl, 1.5 * ttl))  # abandon it: let it expire
        except StoreError:
            history.store_errors += 1
            await anyio.sleep(0.01)


# ------------------------------------------------------------ the contract


class _ContractBase:
    """Settings every contract class reads; a subclass overrides what its store needs."""

    ttl: float = 0.5  # lease ttl for the tests; stores with a minimum ttl raise it
    clock_slack: float = 0.02  # tolerated disagreement between the store's and the test's clock
    call_bound: float = 5.0  # no single call may take longer than this in a healthy store

    def opened(self, make_lock: Callable[[], LockBackend], n: int = 1) -> _Opened:
        return _Opened(make_lock, n)


class LockBackendContract(_ContractBase):
    """Behaviour every LockBackend must show. Subclass and provide `make_lock`."""

    contenders: int = 20
    hammer_seconds: float = 3.0

    @pytest.mark.anyio
    async def test_protocol_and_declared_capabilities(self, make_lock: Callable[[], Any]) -> None:
        async with self.opened(make_lock) as (lock,):
            assert isinstance(lock, LockBackend)
            if isinstance(lock, Watchable):
                assert isinstance(self, WatchableContract), (
                    "backend is Watchable: add WatchableContract"
                )
            if isinstance(lock, Fingerprinted):
                assert isinstance(self, FingerprintedContract), (
                    "backend keeps key fingerprints: add FingerprintedContract"
                )
            if isinstance(lock, RowStorage):
                assert isinstance(self, RowStorageContract), (
                    "backend has rows: add RowStorageContract"
                )
            if isinstance(lock, FencedLog):  # (by name: log_contract imports this module)
                assert "FencedLogContract" in {c.__name__ for c in type(self).__mro__}, (
                    "backend has a fenced log: add log_contract.FencedLogContract"
                )

    @pytest.mark.anyio
    async def test_free_lock_reads_none_then_holder_is_discoverable(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound):
                assert await b.current() is None
                lease = await a.acquire("node-a", "127.0.0.1:7001", self.ttl)
                assert lease is not None
                assert (lease.holder, lease.address, lease.ttl) == (
                    "node-a",
                    "127.0.0.1:7001",
                    self.ttl,
                )
                assert lease.token > 0
                assert 0 < lease.remaining <= self.ttl + self.clock_slack
                seen = await b.current()
            assert seen is not None
            assert (seen.holder, seen.address, seen.token) == (
                "node-a",
                "127.0.0.1:7001",
                lease.token,
            )
            assert 0 < seen.remaining <= self.ttl + self.clock_slack

    @pytest.mark.anyio
    async def test_held_lock_refuses_another_holder_without_waiting(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            ttl = max(self.ttl, 3.0)  # long enough that the refusal cannot be a takeover
            with anyio.fail_after(self.call_bound):
                lease = await a.acquire("node-a", "addr-a", ttl)
                assert lease is not None
                started = _now()
                assert await b.acquire("node-b", "addr-b", ttl) is None
            assert _now() - started < ttl / 2, "acquire waited for the holder"
            seen = await b.current()
            assert seen is not None and seen.holder == "node-a"

    @pytest.mark.anyio
    async def test_same_holder_reacquire_gets_a_higher_token(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound):
                first = await a.acquire("node-a", "addr-a", self.ttl)
                again = await b.acquire("node-a", "addr-a2", self.ttl)
                assert first is not None and again is not None
                assert again.token > first.token
                assert again.address == "addr-a2"
                # The old token is superseded: renewing it is refused.
                assert await a.renew(first, self.ttl) is None
                assert await b.renew(again, self.ttl) is not None

    @pytest.mark.anyio
    async def test_renew_keeps_the_token_and_extends_the_lease(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound + 2 * self.ttl):
                lease = await a.acquire("node-a", "addr-a", self.ttl)
                assert lease is not None
                # Renew past the original expiry: the lease must stay ours.
                for _ in range(6):
                    await anyio.sleep(self.ttl / 4)
                    renewed = await a.renew(lease, self.ttl)
                    assert renewed is not None, "renewal of a live lease refused"
                    assert (renewed.holder, renewed.token) == ("node-a", lease.token)
                    lease = renewed
                assert await b.acquire("node-b", "addr-b", self.ttl) is None

    @pytest.mark.anyio
    async def test_takeover_after_expiry_and_late_renewal_refused(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            with anyio.fail_after(self.call_bound + 3 * self.ttl):
                lease = await a.acquire("node-a", "addr-a", self.ttl)
                assert lease is not None
                await anyio.sleep(self.ttl + self.clock_slack + 0.05)
                assert await b.current() is None, "expired lease still reported as held"
                taken = await b.acquire("node-b", "addr-b", self.ttl)
                assert taken is not None, "expired lease could not be taken over"
                assert taken.token > lease.token
                assert await a.renew(lease, self.ttl) is None, "renewal after loss succeeded"
                seen = await a.current()
                assert seen is not None and (seen.holder, seen.token) == ("node-b", taken.token)

    @pytest.mark.anyio
    async def test_release_allows_immediate_takeover(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 2) as (a, b):
            ttl = max(self.ttl, 3.0)
            with anyio.fail_after(self.call_bound):
                lease = await a.acquire("node-a", "addr-a", ttl)
                assert lease is not None
                await a.release(lease)
                assert await b.current() is None
                taken = await b.acquire("node-b", "addr-b", ttl)
                assert taken is not None, "released lease could not be taken at once"
                assert taken.token > lease.token
                # A stale release must not free the new holder's lease.
                await a.release(lease)
                seen = await a.current()
                assert seen is not None and seen.holder == "node-b"
                assert await a.renew(lease, ttl) is None

    @pytest.mark.anyio
    async def test_tokens_strictly_increase_across_holders(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 5) as backends:
            tokens: list[int] = []
            with anyio.fail_after(self.call_bound * 2):
                for round_ in range(15):
                    i = round_ % len(backends)
                    lease = await backends[i].acquire(f"node-{i}", f"addr-{i}", self.ttl)
                    assert lease is not None
                    tokens.append(lease.token)
                    await backends[i].release(lease)
            assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False)), tokens

    @pytest.mark.anyio
    async def test_cancelled_call_leaves_the_backend_usable(self, make_lock: Any) -> None:
        async with self.opened(make_lock, 1) as (a,):
            for delay in (0.0, 0.001, 0.005):
                with anyio.move_on_after(delay):
                    await a.acquire("node-a", "addr-a", self.ttl)
            with anyio.fail_after(self.call_bound):
                lease = await a.acquire("node-a", "addr-a", self.ttl)
                assert lease is not None
                assert await a.renew(lease, self.ttl) is not None

    @pytest.mark.anyio
    async def test_mutual_exclusion_under_contention(self, make_lock: Any) -> None:
        history = History()
        async with self.opened(make_lock, self.contenders) as backends:
            deadline = _now() + self.hammer_seconds
            # On a loaded machine fewer handovers fit in the time: go on (bounded)
            # until the run has seen enough of them to prove something.
            hard_deadline = deadline + 2 * self.hammer_seconds

            def more() -> bool:
                enough = len(history.grants) >= 5 and len({g.holder for g in history.grants}) >= 3
                return not enough and _now() < hard_deadline

            with anyio.fail_after(3 * self.hammer_seconds + self.call_bound + 2 * self.ttl):
                async with anyio.create_task_group() as tg:
                    for i, backend in enumerate(backends):
                        tg.start_soon(
                            contend,
                            backend,
                            f"contender-{i}",
                            self.ttl,
                            deadline,
                            history,
                            Random(i),
                            _now,
                            more,
                        )
        problems = check_history(history, clock_slack=self.clock_slack)
        assert not problems, "\n".join(problems[:20])
        holders = {g.holder for g in history.grants}
        print(  # shown with -s: what the run covered
            f"{self.contenders} contenders: {len(history.grants)} grants to {len(holders)} "
            f"holders, {len(history.renewals)} renewals, {history.calls} calls, "
            f"{history.store_errors} store errors"
        )
        assert len(history.grants) >= 5 and len(holders) >= 3, (
            f"too little happened to prove anything: {len(history.grants)} grants to {holders}"
        )
        assert history.store_errors <= history.calls // 10, (
            f"{history.store_errors} store errors in {history.calls} calls without any outage"
        )


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


# ------------------------------------------------------------ through real nodes


async def graceful_failover_seconds(lock: dict[str, Any], *, nodes: int = 3) -> float:
    """Run `nodes` real nodes (tcp on loopback, heartbeat) on the lock section
    `lock` (e.g. ``{"use": "sqlite", "path": ...}``), stop the leader
    gracefully, and return the seconds until another node leads.

    The ttl and retry period are long (20 s, 10 s), so a quick failover shows
    that release plus watch() work through the election, not the polling."""
    import hedgeplug  # the node runtime sits above this kit's other parts

    section = {"ttl": "20s", "retry": "10s", **lock}
    stops: dict[str, anyio.Event] = {}
    running: dict[str, Any] = {}

    async def run(name: str, started: anyio.Event) -> None:
        config = {
            "node": {"id": name, "cluster": "failover", "stop_timeout": "3s"},
            "lock": section,
            "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
            "membership": {"use": "heartbeat", "interval": "200ms"},
        }
        stops[name] = anyio.Event()
        async with hedgeplug.open_node(config) as node:
            running[name] = node
            started.set()
            await stops[name].wait()

    async def leaders(exclude: str = "") -> list[Any]:
        return [n for name, n in running.items() if name != exclude and n.is_leader]

    async with anyio.create_task_group() as tg:
        for i in range(nodes):
            started = anyio.Event()
            tg.start_soon(run, f"node-{i}", started)
            with anyio.fail_after(10):
                await started.wait()
        with anyio.fail_after(10):
            while len(await leaders()) != 1:
                await anyio.sleep(0.01)
        (old,) = await leaders()
        stopped_at = _now()
        stops[old.id].set()
        with anyio.fail_after(10):
            while not await leaders(exclude=old.id):
                await anyio.sleep(0.01)
        took = _now() - stopped_at
        for event in stops.values():
            event.set()
    return took
