"""Can a node with other keys capture the lease? Checks with real
`hedgeplug run` processes, for any lock store (the sqlite file by default;
give `overrides` such as ``["lock.use=postgres", "lock.dsn=..."]`` for
another), used by the core tests and by each store plugin's tests.

- `foreign_joiner_never_leads`: two nodes of key A lead, a node of key B
  joins; the leader is SIGKILLed `kills` times (a new A node replaces it each
  time). The B node must never take the lease, must log the mismatch error
  exactly once and report it in its status; the A nodes keep one leader
  stamped with A's key id, report no mismatch, and `send` through them works.
- `foreign_first_keeps_the_lease`: the B node leads first and two A nodes
  join: they never contend, each logs the error once and reports it; the B
  node keeps its lease (it is the cluster until an operator rekeys a side).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ..control import ControlClient
from ..errors import HedgeplugError
from ..keyring import ClusterKey, Keyring, generate_key
from .processes import NodeProcess, ProcessCluster, Status

MISMATCH_LOG = "do not match the cluster's"
POLL = 0.1


class KeyedCluster:
    """A ProcessCluster whose children each get a key file of their own."""

    def __init__(self, workdir: Path, *, cluster: str, ttl: float, overrides: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.ttl = ttl
        self.processes = ProcessCluster(
            self.workdir, cluster=cluster, overrides=[*overrides, f"lock.ttl={ttl}s"]
        )
        self.secrets: dict[str, str] = {}
        self.node_keys: dict[str, str] = {}  # node id -> key name it started with
        self.status_keys: list[str] | None = None  # the client's keys for every node, when set
        self._clients: dict[str, ControlClient] = {}
        self._files = 0

    async def __aenter__(self) -> KeyedCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            for client in self._clients.values():
                await client.aclose()
            await self.processes.aclose()

    def key_id(self, name: str) -> str:
        return ClusterKey.from_secret(self.secret(name)).hex

    def secret(self, name: str) -> str:
        if name not in self.secrets:
            self.secrets[name] = generate_key()
        return self.secrets[name]

    def key_file(self, path: Path, names: Sequence[str]) -> Path:
        """Write the keys `names` (primary first) to `path`, atomically, mode 0600."""
        staged = path.with_suffix(".next")
        staged.write_text("".join(self.secret(n) + "\n" for n in names))
        os.chmod(staged, 0o600)
        os.replace(staged, path)
        return path

    async def add(self, key: str, *, key_file: Path | None = None) -> NodeProcess:
        """Start a node with the key named `key` (or the given key file)."""
        self._files += 1
        path = key_file or self.key_file(self.workdir / f"{key}-{self._files}.keys", [key])
        config = self.processes.config.with_node(key_file=str(path))
        node = await self.processes.add(config=config)
        self.node_keys[node.id] = key
        return node

    async def add_many(self, key: str, count: int) -> list[NodeProcess]:
        """Start `count` nodes with the key named `key` at once."""
        started: list[NodeProcess] = []

        async def one() -> None:
            started.append(await self.add(key))

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
        return started

    def client(self, keys: Sequence[str]) -> ControlClient:
        label = ",".join(keys)
        if label not in self._clients:
            self._clients[label] = ControlClient(
                cluster=self.processes.cluster, key=Keyring([self.secret(k) for k in keys])
            )
        return self._clients[label]

    async def status(self, node: NodeProcess, keys: Sequence[str] | None = None) -> Status | None:
        client = self.client(keys or self.status_keys or [self.node_keys[node.id]])
        try:
            return await client.status(node.address, 2.0)
        except (HedgeplugError, OSError, TimeoutError):
            return None

    async def statuses(self, nodes: Sequence[NodeProcess] | None = None) -> dict[str, Status | None]:
        out: dict[str, Status | None] = {}

        async def one(node: NodeProcess) -> None:
            out[node.id] = await self.status(node)

        async with anyio.create_task_group() as tg:
            for node in nodes if nodes is not None else self.processes.live:
                tg.start_soon(one, node)
        return out

    async def wait(self, condition: Any, timeout: float, what: str) -> dict[str, Status | None]:
        """Poll statuses until condition(statuses) holds; AssertionError after `timeout`."""
        last: dict[str, Status | None] = {}
        with anyio.move_on_after(timeout):
            while True:
                last = await self.statuses()
                if condition(last):
                    return last
                await anyio.sleep(POLL)
        raise AssertionError(f"not within {timeout}s: {what}\n{describe(last)}\n{self.logs()}")

    def logs(self, lines: int = 12) -> str:
        return "\n".join(f"--- {n.id} log:\n{n.log_tail(lines)}" for n in self.processes.nodes)


def describe(statuses: dict[str, Status | None]) -> str:
    out = []
    for node_id, s in sorted(statuses.items()):
        if s is None:
            out.append(f"  {node_id}: no answer")
            continue
        leader = s.get("leader") or {}
        mismatch = (s.get("key_mismatch") or {}).get("fingerprint")
        out.append(
            f"  {node_id}: is_leader={s.get('is_leader')} leader={leader.get('id')}"
            f" fingerprint={leader.get('fingerprint')} token={s.get('token')} mismatch={mismatch}"
        )
    return "\n".join(out)


def leaders(statuses: dict[str, Status | None]) -> list[str]:
    return [i for i, s in statuses.items() if s is not None and s.get("is_leader")]


def mismatch_lines(node: NodeProcess) -> int:
    return node.log_path.read_text(errors="replace").count(MISMATCH_LOG)


def never_acquired(status: Status | None) -> bool:
    return status is not None and not status["is_leader"] and "acquired" not in status["counters"]


async def foreign_joiner_never_leads(
    workdir: Path, *, cluster: str, ttl: float, kills: int, overrides: Sequence[str] = ()
) -> None:
    """Reproduction 2 of the trust issue, `kills` leader crashes long."""
    async with KeyedCluster(workdir, cluster=cluster, ttl=ttl, overrides=overrides) as kc:
        a_id = kc.key_id("A")
        a_nodes = await kc.add_many("A", 2)

        def a_leads(statuses: dict[str, Status | None]) -> bool:
            led = leaders(statuses)
            if len(led) != 1 or kc.node_keys[led[0]] != "A":
                return False
            lease = statuses[led[0]]["leader"]  # type: ignore[index]
            return bool(lease["fingerprint"] == a_id) and all(
                s is not None and (s.get("leader") or {}).get("id") == led[0]
                for i, s in statuses.items() if kc.node_keys[i] == "A"
            )

        await kc.wait(a_leads, 4 * ttl + 10, "the A nodes elect a leader stamped with key A")
        b_node = await kc.add("B")
        await kc.wait(
            lambda s: (s.get(b_node.id) or {}).get("key_mismatch") is not None,
            3 * ttl + 10, "the B node reports its key mismatch",
        )
        for round_ in range(kills):
            statuses = await kc.statuses()
            (leader_id,) = leaders(statuses)
            old_token = statuses[leader_id]["token"]  # type: ignore[index]
            victim = next(n for n in a_nodes if n.id == leader_id)
            kc.processes.kill(victim)
            a_nodes.remove(victim)

            def replaced(statuses: dict[str, Status | None], old: int = old_token) -> bool:
                b = statuses.get(b_node.id)
                assert b is None or not b["is_leader"], f"the B node took the lease:\n{describe(statuses)}"
                return a_leads(statuses) and statuses[leaders(statuses)[0]]["token"] > old  # type: ignore[index]

            await kc.wait(replaced, 2 * ttl + 10, f"kill {round_ + 1}: another A node leads")
            a_nodes.append(await kc.add("A"))
        # Some more lease periods with every node up: still no capture.
        await anyio.sleep(ttl)
        final = await kc.wait(a_leads, 2 * ttl + 10, "one A leader at the end")
        b = final[b_node.id]
        assert never_acquired(b), f"the B node contended:\n{describe(final)}"
        assert b is not None
        assert b["key_mismatch"]["fingerprint"] == a_id, b["key_mismatch"]
        assert b["counters"].get("lease.key-mismatch") == 1, b["counters"]
        assert mismatch_lines(b_node) == 1, b_node.log_tail(40)
        for node in a_nodes:
            s = final[node.id]
            assert s is not None and s["key_mismatch"] is None, describe(final)
            assert mismatch_lines(node) == 0, node.log_tail(40)
            reply = await kc.client(["A"]).send(node.address, {"from": node.id}, timeout=5.0)
            assert reply == {"node": leaders(final)[0], "payload": {"from": node.id}}, reply


async def foreign_first_keeps_the_lease(
    workdir: Path, *, cluster: str, ttl: float, overrides: Sequence[str] = ()
) -> None:
    """Reproduction 1 of the trust issue: the B node came first."""
    async with KeyedCluster(workdir, cluster=cluster, ttl=ttl, overrides=overrides) as kc:
        b_id = kc.key_id("B")
        b_node = await kc.add("B")
        first = await kc.wait(lambda s: leaders(s) == [b_node.id], 4 * ttl + 10, "the B node leads")
        token = first[b_node.id]["token"]  # type: ignore[index]
        a_nodes = await kc.add_many("A", 2)

        def a_report(statuses: dict[str, Status | None]) -> bool:
            return all(
                (statuses.get(n.id) or {}).get("key_mismatch") is not None for n in a_nodes
            )

        await kc.wait(a_report, 3 * ttl + 10, "both A nodes report the mismatch")
        await anyio.sleep(2 * ttl)  # a couple of lease periods: the A nodes still do not contend
        final = await kc.statuses()
        assert leaders(final) == [b_node.id] and final[b_node.id]["token"] == token, describe(final)  # type: ignore[index]
        assert final[b_node.id]["key_mismatch"] is None  # type: ignore[index]
        for node in a_nodes:
            s = final[node.id]
            assert never_acquired(s), describe(final)
            assert s is not None
            mismatch = s["key_mismatch"]
            assert (mismatch["fingerprint"], mismatch["holder"]) == (b_id, b_node.id), mismatch
            assert b_id in mismatch["message"] and "will not contend" in mismatch["message"]
            assert s["counters"].get("lease.key-mismatch") == 1, s["counters"]
            assert mismatch_lines(node) == 1, node.log_tail(40)
