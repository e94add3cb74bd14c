"""Every invariant checker catches a deliberately broken plugin.

The broken plugins below are test fixtures, registered like any third-party
plugin through Registry.load(extra=...); the same scenarios with the real
plugins pass (tests/test_sim.py)."""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from hedgeplug.contracts import Lease
from hedgeplug.hookspecs import hookimpl
from hedgeplug.lock.memory import MemoryLock, get_store
from hedgeplug.membership.heartbeat import HeartbeatOptions
from hedgeplug.membership.heartbeat import make as make_heartbeat
from hedgeplug.sim.harness import Result, Simulation
from hedgeplug.view import Member, View


@attrs.frozen
class NoOptions:
    pass


# ---------------------------------------------------------------- broken memberships


class Lonely:
    """Never learns of anyone: every node stays a group of one."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        self.ctx.publish_view(View.of([Member(self.ctx.id, self.ctx.address)]))
        await anyio.sleep_forever()

    async def leave(self) -> None:
        pass


class _Intercept:
    """A node context whose publish_view goes to the flapper first."""

    def __init__(self, ctx: Any, on_publish: Any) -> None:
        self._ctx = ctx
        self._on_publish = on_publish

    def publish_view(self, view: View) -> None:
        self._on_publish(view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


class Flappy:
    """The real heartbeat strategy, except that every 7s it drops one healthy
    member from its view for a second."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.latest = View()
        self.inner = make_heartbeat(HeartbeatOptions(), _Intercept(ctx, self._published))

    def _published(self, view: View) -> None:
        self.latest = view
        self.ctx.publish_view(view)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.inner.run)
            while True:
                await anyio.sleep(7)
                others = [m for m in self.latest.members if m.id != self.ctx.id]
                if others:
                    victim = self.ctx.random.choice(others)
                    self.ctx.publish_view(
                        View(tuple(m for m in self.latest.members if m is not victim))
                    )
                    await anyio.sleep(1)
                    self.ctx.publish_view(self.latest)

    async def leave(self) -> None:
        await self.inner.leave()


class Crashy:
    """Fails by itself after 5 seconds (takes its node down)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        await anyio.sleep(5)
        raise RuntimeError("strategy bug")

    async def leave(self) -> None:
        pass


# ---------------------------------------------------------------- broken locks


class Careless(MemoryLock):
    """Says the lock is free and hands it to whoever asks, even while another holds it."""

    async def current(self) -> Lease | None:
        await super().current()
        return None

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:
        self.store._locks.pop(self.lock, None)
        return await super().acquire(holder, address, ttl)


class StuckToken(MemoryLock):
    """Respects holders but hands out token 1 every time."""

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:
        got = await super().acquire(holder, address, ttl)
        if got is None:
            return None
        self.store._locks[self.lock].token = 1
        return attrs.evolve(got, token=1)


class BrokenPlugins:
    __name__ = "broken-test-plugins"

    @hookimpl
    def hedgeplug_register_memberships(self, register: Any) -> None:
        register("lonely", lambda options, ctx: Lonely(ctx), NoOptions)
        register("flappy", lambda options, ctx: Flappy(ctx), NoOptions)
        register("crashy", lambda options, ctx: Crashy(ctx), NoOptions)

    @hookimpl
    def hedgeplug_register_locks(self, register: Any) -> None:
        def factory(cls: type[MemoryLock]) -> Any:
            return lambda options, ctx: cls(get_store("sim"), ctx.lock_name, ctx.id)

        register("careless", factory(Careless), NoOptions)
        register("stuck-token", factory(StuckToken), NoOptions)


def simulate(scenario: Any, **kw: Any) -> Result:
    return Simulation(1, extra_plugins=[BrokenPlugins()], **kw).run(scenario)


async def steady(sim: Simulation, size: int = 4, seconds: float = 30) -> None:
    await sim.start(size)
    await sim.sleep(seconds)


async def kill_leaders(sim: Simulation) -> None:
    await sim.start(4)
    for _ in range(2):
        await sim.sleep(8)
        leader = sim.leader()
        assert leader is not None
        sim.faults.crash(leader)
    await sim.sleep(8)


def assert_caught(result: Result, invariant: str) -> None:
    assert not result.ok
    assert invariant in result.violation_counts, result.violation_counts
    first = result.first_violation
    assert first is not None and first.before, "the first violation carries the trace before it"
    assert any("VIOLATION" in line for line in first.before + first.after)


# ---------------------------------------------------------------- the checks


def test_convergence_checker_catches_a_strategy_that_never_agrees() -> None:
    result = simulate(steady, membership="lonely", convergence_bound=10)
    assert_caught(result, "convergence")
    assert result.metrics["final_groups"] == 4


def test_flapping_checker_catches_removal_of_a_healthy_member() -> None:
    result = simulate(lambda sim: steady(sim, 4, 40), membership="flappy", flap_grace=5)
    assert_caught(result, "no-flapping")
    assert "removed" in result.first_violation.message  # type: ignore[union-attr]


def test_single_leader_checker_catches_a_lock_that_grants_twice() -> None:
    result = simulate(steady, lock_options={"use": "careless"})
    assert_caught(result, "single-leader")
    assert result.metrics["leader_overlap"]["samples"] > 0


async def freeze_leader_under_drift(sim: Simulation, rate: float) -> None:
    await sim.start(4)
    await sim.sleep(5)
    sim.faults.store_clock_rate(rate)
    leader = sim.leader()
    assert leader is not None
    sim.faults.freeze(leader, 10)  # it cannot renew; its lease runs out on the store's clock
    await sim.sleep(30)


def test_single_leader_checker_catches_store_clock_drift_beyond_the_margin() -> None:
    # A store clock twice as fast ends the lease after half the ttl as the
    # leader counts it, before the leader's own limit of ttl * (1 - 0.25).
    assert_caught(simulate(lambda sim: freeze_leader_under_drift(sim, 2.0)), "single-leader")


def test_store_clock_drift_within_the_margin_is_safe() -> None:
    result = simulate(lambda sim: freeze_leader_under_drift(sim, 1.2))
    assert result.ok, result.first_violation
    assert result.metrics["failover_time"]["count"] == 1


def test_fencing_checker_catches_tokens_that_do_not_increase() -> None:
    result = simulate(kill_leaders, lock_options={"use": "stuck-token"})
    assert_caught(result, "fencing-tokens")


def test_node_crash_is_reported_not_fatal() -> None:
    result = simulate(lambda sim: steady(sim, 3, 10), membership="crashy")
    assert_caught(result, "node-crash")
    assert result.violation_counts["node-crash"] == 3  # each node once; the first is kept
    assert "strategy bug" in result.first_violation.message  # type: ignore[union-attr]


def test_real_plugins_pass_the_same_scenarios() -> None:
    assert simulate(steady).ok
    assert simulate(kill_leaders).ok


def test_detection_checker_catches_a_crash_nobody_notices() -> None:
    async def crash_follower(sim: Simulation) -> None:
        await sim.start(4)
        await sim.sleep(5)
        sim.faults.crash(next(n for n in sim.running() if not n.is_leader))
        await sim.sleep(20)

    # Heartbeat told to tolerate 1000 missed beats: a crash stays in the views.
    result = simulate(crash_follower, membership_options={"missed": 1000}, detection_bound=10)
    assert_caught(result, "detection")
    assert "still in the view of 3 node(s)" in result.first_violation.message  # type: ignore[union-attr]
    assert simulate(crash_follower, detection_bound=10).ok


async def crash_one_follower(sim: Simulation) -> None:
    await sim.start(4)
    await sim.sleep(5)
    sim.faults.crash(next(n for n in sim.running() if not n.is_leader))
    await sim.sleep(30)


def test_without_a_given_bound_the_strategy_states_it() -> None:
    # Heartbeat with 10 missed beats of 1s states more than 12s; its crash
    # detection takes about 10s: within its own bound, and beyond a 5s one.
    result = simulate(crash_one_follower, membership_options={"missed": 10})
    assert result.ok, result.first_violation
    stated = result.bounds["detection"]
    assert stated["source"] == "stated, largest" and 12 < stated["seconds"] < 20
    assert result.metrics["detection_time"]["max"] > 9
    given = simulate(crash_one_follower, membership_options={"missed": 10}, detection_bound=5)
    assert_caught(given, "detection")
    assert given.bounds["detection"] == {"seconds": 5, "source": "given"}


def test_a_strategy_stating_no_bound_gets_the_default() -> None:
    result = simulate(lambda sim: steady(sim, 3, 5), membership="lonely")
    assert result.bounds["detection"]["source"] == "default"
    assert result.bounds["detection"]["seconds"] == 20.0
