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

from collections.abc import Callable
from random import Random
from typing import Any

import anyio
import pytest

from hedgeplug.contracts import FencedLog, Fingerprinted, LockBackend, RowStorage, Watchable

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

from .lock_capabilities import (
    ConnectionLossContract,
    FingerprintedContract,
    RowStorageContract,
    StallContract,
    StoreOutageContract,
    WatchableContract,
)
from .lock_history import (
    Grant,
    History,
    Observation,
    Release,
    Renewal,
    _ContractBase,
    _now,
    check_history,
    contend,
)


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
