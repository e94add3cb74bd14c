"""The simulated processes: starting, stopping, crashing and restarting real
nodes inside the run, and what each node's events tell the measurement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from random import Random
from typing import Any, Protocol

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from hedgeplug.config import Config
from hedgeplug.contracts import Lease
from hedgeplug.errors import HedgeplugError
from hedgeplug.events import LeaderChanged, MembersChanged
from hedgeplug.node import open_node
from hedgeplug.registry import Registry

from .determinism import derive_seed, leaves
from .metrics import Metrics
from .simnode import SimNode

NETWORK = "sim"
STORE = "sim"
CLUSTER = "sim"
JOIN_RULES = ("one-random", "sample-1-3", "fixed")


class _JoinCandidates(Sequence[str]):
    """The running nodes' addresses followed by the new node's own, as a
    sequence read one item at a time (`Random.choice` needs only `len` and
    one index)."""

    def __init__(self, running: list[SimNode], own: str) -> None:
        self._running = running
        self._own = own

    def __len__(self) -> int:
        return len(self._running) + 1

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [*(sn.address for sn in self._running), self._own][index]
        if index < 0:
            index += len(self)
        if index == len(self._running):
            return self._own
        return self._running[index].address


class FleetHost(Protocol):
    """What the fleet tells the run about: the clock, the trace, the metrics,
    and changes the cluster must converge after."""

    metrics: Metrics

    def now(self) -> float: ...

    def log(self, who: str, what: str) -> None: ...

    def change(self, what: str) -> None: ...

    def disturb(self) -> None: ...

    def report(self, invariant: str, message: str) -> None: ...


@attrs.frozen
class NodeRecipe:
    """How every simulated node is configured."""

    membership: str
    membership_options: dict[str, Any]
    ttl: float
    lock_options: dict[str, Any]
    seeds_supported: bool
    base: Config | None = None  # a typed Config (from `hedgeplug sim`) replaces the fields above

    def config(self, run_seed: int, node_id: str, seeds: list[str]) -> dict[str, Any] | Config:
        if self.base is not None:
            config = self.base.with_node(
                id=node_id, cluster=CLUSTER, seed=derive_seed(run_seed, node_id)
            )
            if seeds and self.seeds_supported:
                config = config.with_options("membership", seeds=seeds)
            return config
        membership = {"use": self.membership, **self.membership_options}
        # Another lock than the memory one (a test's broken lock) gets no store option.
        lock: dict[str, Any] = {"use": "memory", "ttl": self.ttl, **self.lock_options}
        if lock["use"] == "memory":
            lock.setdefault("store", STORE)
        if seeds and self.seeds_supported:
            membership["seeds"] = seeds
        return {
            "node": {"id": node_id, "cluster": CLUSTER, "seed": derive_seed(run_seed, node_id)},
            "lock": lock,
            "transport": {"use": "memory", "network": NETWORK},
            "membership": membership,
            "broadcast": {"use": "direct"},
        }


class Fleet:
    """Every process one run has started, and the actions on them."""

    def __init__(
        self,
        host: FleetHost,
        recipe: NodeRecipe,
        registry: Registry,
        *,
        seed: int,
        random: Random,
        join_rule: str,
        max_nodes: int,
        on_members: Callable[[SimNode, MembersChanged], None],
        on_leader: Callable[[SimNode, LeaderChanged], None],
    ) -> None:
        self.host = host
        self.recipe = recipe
        self.registry = registry
        self.seed = seed
        self.random = random
        self.join_rule = join_rule
        self.max_nodes = max_nodes
        self.nodes: dict[str, SimNode] = {}
        # The running nodes in start order, kept as they change: the run asks
        # for them at every sample and every start.
        self._running: dict[str, SimNode] = {}
        self._live: frozenset[str] | None = None  # their ids, made when first asked
        # Nodes that may believe they lead. A node becomes leader only by
        # acquiring the lease, and the election announces every acquisition
        # (a LeaderChanged naming the node itself); an announcement naming
        # anyone else means it does not lead then. So the nodes whose latest
        # announcement named themselves are the only ones to ask.
        self._leading: dict[str, SimNode] = {}
        self.task_group: TaskGroup | None = None  # the run's, set while it runs
        self._on_members = on_members
        self._on_leader = on_leader
        self._next_index = 0

    # ------------------------------------------------------------ who is there

    def running(self) -> list[SimNode]:
        return list(self._running.values())

    def running_count(self) -> int:
        return len(self._running)

    def _set_state(self, sn: SimNode, state: str) -> None:
        sn.state = state
        self._live = None
        if state != "running":
            self._running.pop(sn.id, None)
            return
        last = next(reversed(self._running.values()), None)
        self._running[sn.id] = sn
        if last is not None and last.index > sn.index:  # started out of order: keep start order
            self._running = dict(sorted(self._running.items(), key=lambda item: item[1].index))

    def live_ids(self) -> frozenset[str]:
        """Ids of the running nodes (the same object until one starts or stops)."""
        if self._live is None:
            self._live = frozenset(self._running)
        return self._live

    def is_running(self, node_id: str) -> bool:
        sn = self.nodes.get(node_id)
        return sn is not None and sn.running

    def leaders(self) -> list[SimNode]:
        """The running nodes that believe they lead now, in start order."""
        found = [sn for sn in self._leading.values() if sn.is_leader]
        return sorted(found, key=lambda sn: sn.index) if len(found) > 1 else found

    def leader(self) -> SimNode | None:
        found = self.leaders()
        return found[0] if found else None

    def _announced(self, sn: SimNode, lease: Lease | None) -> None:
        if lease is not None and lease.holder == sn.id:
            self._leading[sn.id] = sn
        else:
            self._leading.pop(sn.id, None)

    def leader_token(self, node_id: str) -> int:
        sn = self.nodes[node_id]
        return sn.node.token if sn.node is not None else 0

    # ------------------------------------------------------------ starting

    def _pick_join(self, own: str, rule: str) -> list[str]:
        if rule == "one-random":
            # A Service's cluster IP: any running process, the new one included.
            # The same draw as choice() over [every running address, own],
            # without building that list at every start (O(n) per start).
            return [self.random.choice(_JoinCandidates(self.running(), own))]
        others = [sn.address for sn in self.running()]
        if rule == "sample-1-3":
            if not others:
                return [own]
            return self.random.sample(others, min(len(others), self.random.randint(1, 3)))
        first = next(iter(self.nodes.values()), None)
        return [first.address if first is not None else own]

    async def start(self, count: int = 1, *, join: str | None = None) -> list[SimNode]:
        return [await self.start_one(join or self.join_rule) for _ in range(count)]

    async def start_one(self, rule: str, node_id: str | None = None) -> SimNode:
        assert self.task_group is not None, "start nodes from inside a running scenario"
        if len(self.nodes) >= self.max_nodes:
            raise HedgeplugError(f"the scenario tried to start more than {self.max_nodes} nodes")
        host = self.host
        index = self._next_index
        self._next_index += 1
        node_id = node_id or f"n{index:04d}"
        address = f"mem://{node_id}"
        seeds = self._pick_join(address, rule)
        sn = SimNode(node_id, index, address, host.now(), calm_since=host.now(), join=tuple(seeds))
        sn.stop_requested, sn.done = anyio.Event(), anyio.Event()
        self.nodes[node_id] = sn
        config = self.recipe.config(self.seed, node_id, seeds)
        await self.task_group.start(self._node_main, sn, config)
        host.log(node_id, f"start join={','.join(seeds)}")
        host.metrics.started(node_id, host.now())
        host.change(f"start {node_id}")
        return sn

    async def _node_main(
        self, sn: SimNode, config: dict[str, Any], *, task_status: TaskStatus[None]
    ) -> None:
        started = False
        try:
            async with open_node(config, registry=self.registry) as node:
                sn.node = node
                sn.address = node.address
                self._set_state(sn, "running")
                sn.view_ids = node.view.ids

                def on_members(ev: MembersChanged) -> None:
                    self._on_members(sn, ev)

                def on_leader(ev: LeaderChanged) -> None:
                    self._announced(sn, ev.lease)
                    self._on_leader(sn, ev)

                node.on_members_changed(on_members)
                node.on_leader_changed(on_leader)
                if node.is_leader:  # it acquired before anyone listened
                    self._leading[sn.id] = sn
                started = True
                task_status.started()
                await sn.stop_requested.wait()
        except Exception as exc:
            if not started:
                raise
            # A node task failing by itself is a finding (bad input never crashes a node), not a harness crash.
            if sn.running:
                self._set_state(sn, "crashed")
                sn.stopped_at = self.host.now()
                self._gone(sn, "failed", was_leader=False)
            causes = "; ".join(f"{type(e).__name__}: {e}" for e in leaves(exc))
            self.host.report("node-crash", f"{sn.id} failed: {causes}")
        finally:
            sn.done.set()

    # ------------------------------------------------------------ stopping

    def kill(self, sn: SimNode) -> None:
        if not sn.running or sn.node is None:
            return
        was_leader = sn.is_leader
        self._set_state(sn, "crashed")
        sn.stopped_at = self.host.now()
        sn.node.kill()
        self._gone(sn, "kill", was_leader)

    async def stop(self, sn: SimNode) -> None:
        if not sn.running:
            return
        was_leader = sn.is_leader
        self._set_state(sn, "stopped")
        sn.stopped_at = self.host.now()
        self._gone(sn, "stop", was_leader)
        sn.stop_requested.set()
        await sn.done.wait()

    async def stop_many(self, nodes: Sequence[SimNode]) -> None:
        async with anyio.create_task_group() as tg:
            for sn in nodes:
                tg.start_soon(self.stop, sn)

    async def resize(self, target: int, *, crash_share: float = 0.0) -> None:
        running = self.running()
        if target > len(running):
            await self.start(target - len(running))
            return
        victims = self.random.sample(running, len(running) - target)
        crashed = [sn for sn in victims if self.random.random() < crash_share]
        for sn in crashed:
            self.kill(sn)
        await self.stop_many([sn for sn in victims if sn not in crashed])

    async def restart(self, sn: SimNode, *, graceful: bool = False) -> SimNode:
        if graceful:
            await self.stop(sn)
        else:
            self.kill(sn)
        generation = sum(1 for other in self.nodes if other.startswith(sn.id.split(".")[0]))
        return await self.start_one(self.join_rule, f"{sn.id.split('.')[0]}.r{generation}")

    def end(self, t: float) -> None:
        """The run is over: every node still running stops where it stands."""
        for sn in self.running():
            self._set_state(sn, "stopped")
            sn.stopped_at = t
            assert sn.node is not None
            sn.node.kill()

    def _gone(self, sn: SimNode, how: str, was_leader: bool) -> None:
        host = self.host
        host.log(sn.id, how + (" (leader)" if was_leader else ""))
        host.metrics.gone(sn.id, host.now(), graceful=how == "stop")
        host.change(f"{how} {sn.id}")
        if was_leader:
            host.metrics.leader_lost(sn.id, host.now())
            host.disturb()
