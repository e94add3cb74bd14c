"""What the lock contract records and checks: each contender's history of
grants, renewals, releases and readings, `check_history` over the merged
histories, the `contend` loop, and the settings every contract class reads.
(The contract classes themselves: lock_contract.py, lock_capabilities.py.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from random import Random
from typing import Any

import anyio
import attrs

from hedgeplug.contracts import LockBackend
from hedgeplug.errors import StoreError


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
