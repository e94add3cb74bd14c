"""The membership contract: what every membership strategy promises, checked
on the deterministic simulator (many real nodes in one process, virtual time).

A strategy author subclasses `MembershipContract` in a test module and points
one fixture at the strategy, by its registered name and options; a strategy
not installed as an entry point comes in as a plugin object (a module or
object with a `hedgeplug_register_memberships` hook implementation), which
the simulator adds to its registry::

    import pytest
    from hedgeplug.testing.membership_contract import (
        MembershipContract, MembershipUnderTest,
    )
    import my_plugin

    class TestMyMembership(MembershipContract):
        @pytest.fixture
        def membership(self):
            return MembershipUnderTest("mine", {"interval": "0.5s"}, plugins=(my_plugin,))

Each check is a test of its own, and a plain function (`check_join`, ...)
that raises AssertionError with what went wrong:

- join: nodes started one after another; each node and every node started
  before it hold each other in their views within the join bound (given,
  else the convergence bound) of its start;
- graceful leave: a stopped node is gone from every view within the leave
  bound (given, else the convergence bound) of its stop;
- crash detection: a crashed node is gone from every view within the
  detection bound;
- leader change: after the leader crashes, a new node leads and every view
  equals the live set again within the detection bound;
- scale-up: 2 settled nodes, then `k` new ones within a second, each given
  ONE join address chosen uniformly among the running processes (itself
  included, as a Kubernetes Service routes): one agreed view within the
  convergence bound, and it stays agreed;
- replay: the same seed gives the same run (the strategy takes time and
  randomness only from its node context).

Bounds come from the strategy (the `StatesBounds` capability: `bounds(size)`
with "detection" and "convergence" in seconds), else the simulator's default
(20 s); `MembershipUnderTest` can override each. Every run also goes through
the simulator's own invariant checkers (one leader at a time, rising fencing
tokens, convergence, no flapping, detection), and any violation they report
fails the check with the trace around it.

Each check runs once per seed in `MembershipUnderTest.seeds` (three by
default); runs are small (6 to 20 nodes, under a minute of virtual time),
a fraction of a second of wall time each for the built-in strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest

from hedgeplug.sim import Result, SimNode, Simulation, load_scenario

__all__ = [
    "MembershipContract",
    "MembershipUnderTest",
    "check_crash_detection",
    "check_graceful_leave",
    "check_join",
    "check_leader_change",
    "check_replay",
    "check_scale_up",
]

POLL = 0.05  # virtual seconds between looks at the views
HOLD = 5.0  # virtual seconds a converged cluster must stay converged


@attrs.frozen
class MembershipUnderTest:
    """The strategy the contract runs: `name` as in `[membership] use = ...`,
    its `options` (config keys), and `plugins` to add to the registry when
    the strategy is not an installed entry point.

    `detection`, `convergence`, `join` and `leave` override bounds in
    seconds (None: the strategy's stated bound, or the simulator's default;
    `join` and `leave` default to the convergence bound). `ttl` is the lease
    ttl of the memory lock; `seeds` the runs of every check.
    """

    name: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    plugins: Sequence[Any] = attrs.field(default=(), converter=tuple)
    ttl: float = 3.0
    detection: float | None = None
    convergence: float | None = None
    join: float | None = None
    leave: float | None = None
    seeds: Sequence[int] = attrs.field(default=(1, 2, 3), converter=tuple)

    def simulation(self, seed: int) -> Simulation:
        """A simulation of this strategy with Service-style (one-random) joins."""
        return Simulation(
            seed,
            membership=self.name,
            membership_options=dict(self.options),
            ttl=self.ttl,
            join_rule="one-random",
            detection_bound=self.detection,
            convergence_bound=self.convergence,
            extra_plugins=list(self.plugins),
        )


# ---------------------------------------------------------------- helpers


def views_agree(sim: Simulation) -> bool:
    """Every running node's view is exactly the set of running nodes."""
    running = sim.running()
    live = frozenset(sn.id for sn in running)
    return bool(live) and all(sn.view_ids == live for sn in running)


def in_no_view(sim: Simulation, node_id: str) -> bool:
    return not any(node_id in sn.view_ids for sn in sim.running())


def describe_views(sim: Simulation) -> str:
    running = sim.running()
    live = frozenset(sn.id for sn in running)
    wrong = [sn for sn in running if sn.view_ids != live]
    distinct = len({sn.view_ids for sn in running})
    parts = [f"{len(running)} running, {distinct} distinct view(s)"]
    for sn in wrong[:3]:
        missing = sorted(live - sn.view_ids)
        extra = sorted(sn.view_ids - live)
        parts.append(f"{sn.id} misses {missing[:5]} and holds departed {extra[:5]}")
    return "; ".join(parts)


async def wait_until(sim: Simulation, condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition` in virtual time until it holds or `deadline` passes."""
    while not condition():
        if sim.now() > deadline:
            return False
        await sim.sleep(POLL)
    return True


async def settle(sim: Simulation, what: str) -> None:
    """Wait (within the convergence bound) for every view to equal the live set."""
    started = sim.now()
    bound = sim.bound("convergence", len(sim.running()))
    if not await wait_until(sim, lambda: views_agree(sim), started + bound):
        raise AssertionError(
            f"{what}: views did not agree within the convergence bound {bound:.1f}s "
            f"({describe_views(sim)})"
        )


def a_follower(sim: Simulation) -> SimNode:
    leader = sim.leader()
    followers = [sn for sn in sim.running() if sn is not leader]
    assert followers, "the check needs a node that does not lead"
    return followers[-1]


async def hold(sim: Simulation, what: str) -> None:
    """Keep running a while (the checkers watch for flapping) and stay agreed."""
    await sim.sleep(HOLD)
    if not views_agree(sim):
        raise AssertionError(f"{what}: views split again after agreeing ({describe_views(sim)})")


def run_checked(
    strategy: MembershipUnderTest, scenario: Any, name: str, seeds: Sequence[int] | None
) -> list[Result]:
    """Run `scenario` once per seed; a failed check or a violation found by
    the simulator's checkers fails it, naming the seed."""
    results = []
    for seed in strategy.seeds if seeds is None else seeds:
        try:
            result = strategy.simulation(seed).run(scenario, name=name)
        except AssertionError as exc:
            raise AssertionError(f"{strategy.name}, seed {seed}: {exc}") from None
        if not result.ok:
            v = result.first_violation
            assert v is not None
            trace = "\n  ".join(v.before[-15:] + ["--- violation ---"] + v.after[:5])
            raise AssertionError(
                f"{strategy.name}, seed {seed}: broke invariant {v.invariant!r} at {v.at:.2f}s "
                f"in {name}: {v.message} (all violations: {result.violation_counts})\n  {trace}"
            )
        results.append(result)
    return results


# ---------------------------------------------------------------- checks


def check_join(
    strategy: MembershipUnderTest, size: int = 10, seeds: Sequence[int] | None = None
) -> list[Result]:
    """Every node and every node started before it hold each other in their
    views within the join bound (given, else the convergence bound) of its start."""

    async def scenario(sim: Simulation) -> None:
        joined: dict[str, float] = {}

        def update() -> bool:
            # A node has joined once it and every node started before it
            # (itself included) hold each other in their views; pairs with a
            # later node count toward that node's join.
            running = sim.running()
            for new in running:
                if new.id in joined:
                    continue
                older = [sn for sn in running if sn.started_at <= new.started_at]
                if all(new.id in sn.view_ids and sn.id in new.view_ids for sn in older):
                    joined[new.id] = sim.now() - new.started_at
            return all(sn.id in joined for sn in running)

        async def watch(seconds: float) -> None:
            end = sim.now() + seconds
            while sim.now() < end:
                update()
                await sim.sleep(POLL)

        await sim.start(2)
        await watch(2.0)
        for _ in range(size - 2):
            await sim.start(1)
            await watch(0.3)
        nodes = sim.running()
        bound = strategy.join or sim.bound("convergence", size)
        await wait_until(sim, update, max(sn.started_at for sn in nodes) + bound)
        late = {sn.id: joined.get(sn.id) for sn in nodes if joined.get(sn.id, bound + 1) > bound}
        if late:
            raise AssertionError(
                f"join: node(s) not in every view within the join bound {bound:.1f}s "
                f"after starting (seconds taken, None = never): {late}; {describe_views(sim)}"
            )
        await hold(sim, "after the joins")

    return run_checked(strategy, scenario, "contract-join", seeds)


def check_graceful_leave(
    strategy: MembershipUnderTest, size: int = 8, seeds: Sequence[int] | None = None
) -> list[Result]:
    """A node that stops gracefully is gone from every view within the leave bound."""

    async def scenario(sim: Simulation) -> None:
        await sim.start(size)
        await settle(sim, "before the leave")
        bound = strategy.leave or sim.bound("convergence", size)
        leaving = a_follower(sim)
        stopped_at = sim.now()
        await sim.stop(leaving)
        if not await wait_until(sim, lambda: in_no_view(sim, leaving.id), stopped_at + bound):
            holders = sorted(sn.id for sn in sim.running() if leaving.id in sn.view_ids)
            raise AssertionError(
                f"graceful leave: {leaving.id} still in the view of {holders} "
                f"{sim.now() - stopped_at:.1f}s after it stopped (bound {bound:.1f}s)"
            )
        await settle(sim, "after the leave")
        await hold(sim, "after the leave")

    return run_checked(strategy, scenario, "contract-leave", seeds)


def check_crash_detection(
    strategy: MembershipUnderTest, size: int = 8, seeds: Sequence[int] | None = None
) -> list[Result]:
    """A crashed node is gone from every view within the detection bound."""

    async def scenario(sim: Simulation) -> None:
        await sim.start(size)
        await settle(sim, "before the crash")
        bound = sim.bound("detection", size)
        victim = a_follower(sim)
        crashed_at = sim.now()
        sim.faults.crash(victim)
        if not await wait_until(sim, lambda: in_no_view(sim, victim.id), crashed_at + bound):
            holders = sorted(sn.id for sn in sim.running() if victim.id in sn.view_ids)
            raise AssertionError(
                f"crash detection: {victim.id} still in the view of {holders} "
                f"{sim.now() - crashed_at:.1f}s after it crashed (detection bound {bound:.1f}s)"
            )
        await settle(sim, "after the crash")
        await hold(sim, "after the crash")

    return run_checked(strategy, scenario, "contract-crash", seeds)


def check_leader_change(
    strategy: MembershipUnderTest, size: int = 8, seeds: Sequence[int] | None = None
) -> list[Result]:
    """After the leader crashes another node leads and the views agree again,
    within the detection bound."""

    async def scenario(sim: Simulation) -> None:
        await sim.start(size)
        await settle(sim, "before the leader crash")
        if not await wait_until(
            sim, lambda: sim.leader() is not None, sim.now() + 4 * strategy.ttl
        ):
            raise AssertionError("leader change: no node leads before the crash")
        old = sim.leader()
        assert old is not None
        bound = sim.bound("detection", size)
        crashed_at = sim.now()
        sim.faults.crash(old)

        def recovered() -> bool:
            new = sim.leader()
            return new is not None and new is not old and views_agree(sim)

        if not await wait_until(sim, recovered, crashed_at + bound):
            new = sim.leader()
            raise AssertionError(
                f"leader change: {sim.now() - crashed_at:.1f}s after leader {old.id} crashed "
                f"(detection bound {bound:.1f}s) the leader is {new.id if new else 'none'} and "
                f"{describe_views(sim)}"
            )
        await hold(sim, "leader change")

    return run_checked(strategy, scenario, "contract-leader-change", seeds)


def check_scale_up(
    strategy: MembershipUnderTest, k: int = 18, seeds: Sequence[int] | None = None
) -> list[Result]:
    """2 settled nodes, then `k` more within one second, each joining through
    one address picked uniformly among the running processes (possibly
    itself): one agreed view within the convergence bound, kept afterwards."""
    spec = load_scenario("scale-up")
    params = spec.bind({"initial": 2, "k": k, "spread": 1.0, "warmup": 5.0, "settle": 0.0})

    async def scenario(sim: Simulation) -> None:
        await spec.run(sim, **params)
        await settle(sim, f"scale-up by {k}")
        await hold(sim, f"scale-up by {k}")

    return run_checked(strategy, scenario, "contract-scale-up", seeds)


def check_replay(strategy: MembershipUnderTest, seed: int | None = None) -> list[Result]:
    """The same seed replays the same run: equal trace digests. A strategy
    that reads the wall clock or the module-level random breaks this."""
    seeds = [strategy.seeds[0] if seed is None else seed]
    first = check_join(strategy, size=6, seeds=seeds)[0]
    second = check_join(strategy, size=6, seeds=seeds)[0]
    assert first.digest == second.digest, (
        f"two runs of {strategy.name} with seed {first.seed} differ (trace digests "
        f"{first.digest} and {second.digest}): take time from ctx.now()/ctx.sleep() and "
        "randomness from ctx.random"
    )
    return [first, second]


# ---------------------------------------------------------------- the suite


class MembershipContract:
    """Subclass and provide the `membership` fixture (a MembershipUnderTest)."""

    @pytest.fixture
    def membership(self) -> MembershipUnderTest:
        raise NotImplementedError(
            "a MembershipContract subclass must provide the membership fixture"
        )

    def test_join(self, membership: MembershipUnderTest) -> None:
        check_join(membership)

    def test_graceful_leave(self, membership: MembershipUnderTest) -> None:
        check_graceful_leave(membership)

    def test_crash_detection(self, membership: MembershipUnderTest) -> None:
        check_crash_detection(membership)

    def test_leader_change(self, membership: MembershipUnderTest) -> None:
        check_leader_change(membership)

    def test_scale_up_with_one_random_join_ends_in_one_group(
        self, membership: MembershipUnderTest
    ) -> None:
        check_scale_up(membership)

    def test_same_seed_same_run(self, membership: MembershipUnderTest) -> None:
        check_replay(membership)
