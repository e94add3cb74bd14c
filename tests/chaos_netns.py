"""Chaos workers in network namespaces, and partitions between groups of them.

`NetnsWorkerCluster` is the multi-host harness's NetnsCluster (one
namespace per node on a bridge, see netns_kit) whose members are chaos
workers recording their fencing tokens. `Partition` cuts one group of
namespaces off from another with policy-routing rules, needing nothing but
iproute2: in every namespace of each side, packets coming FROM an address
of the other side are blackholed, so both sides see silence (no reset, no
ICMP), as behind a failed switch, while the test process in the root
namespace still reaches everyone over the bridge. The kernel consults the
`local` table at rule priority 0 before any other rule, so the cut first
moves that rule behind the blackholes (priority 1000); `heal` removes the
blackholes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import anyio
from chaos_kit import Window, read_windows, start_worker
from netns_kit import NetnsCluster, NetnsLab, ip

from hedgeplug.testing.processes import NodeProcess

BLACKHOLE_PRIORITY = 100
LOCAL_PRIORITY = 1000


class NetnsWorkerCluster(NetnsCluster):
    """NetnsCluster of chaos workers; `address_of` maps a node id to its namespace address."""

    def __init__(self, workdir: Path, lab: NetnsLab, *, cluster: str, key: str, settings: str) -> None:
        super().__init__(workdir, lab, cluster=cluster, key=key, settings=settings)
        self.address_of: dict[str, str] = {}

    async def add(self, ready_timeout: float = 60.0) -> NodeProcess:  # type: ignore[override]
        self._count += 1
        node_id = f"n{self._count:02d}"
        netns, address = await anyio.to_thread.run_sync(
            self.lab.add_host, node_id, self.first_host + self._count
        )
        config = self.workdir / f"{node_id}.toml"
        config.write_text(self.config_text(node_id, address))
        node = await start_worker(
            ["ip", "netns", "exec", netns], config, self.workdir / f"{node_id}.jsonl",
            self.workdir / f"{node_id}.log", ready_timeout=ready_timeout,
        )
        self.netns_of[node.id] = netns
        self.address_of[node.id] = address
        self.nodes.append(node)
        return node

    def windows(self) -> list[Window]:
        return read_windows(self.workdir.glob("n*.jsonl"))


class Partition:
    """Silent cuts between groups of namespaces ({namespace: its address})."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, str]] = []  # (namespace, blackholed source address)
        self._moved: set[str] = set()

    def _move_local_rule(self, netns: str) -> None:
        if netns in self._moved:
            return
        ip("-n", netns, "rule", "add", "from", "all", "lookup", "local", "priority", str(LOCAL_PRIORITY))
        ip("-n", netns, "rule", "del", "priority", "0")
        self._moved.add(netns)

    def drop_from(self, netns: str, sources: Iterable[str]) -> None:
        """Namespace `netns` silently drops every packet from `sources` (one-sided)."""
        self._move_local_rule(netns)
        for source in sources:
            ip("-n", netns, "rule", "add", "from", f"{source}/32", "blackhole",
               "priority", str(BLACKHOLE_PRIORITY))
            self.rules.append((netns, source))

    def cut(self, side_a: Mapping[str, str], side_b: Mapping[str, str]) -> None:
        """No packet between any namespace of `side_a` and any of `side_b`, either way."""
        for netns in side_a:
            self.drop_from(netns, side_b.values())
        for netns in side_b:
            self.drop_from(netns, side_a.values())

    def heal(self) -> list[str]:
        """Remove every blackhole rule (safe to call twice); errors listed, not raised."""
        errors = []
        while self.rules:
            netns, source = self.rules.pop()
            ip("-n", netns, "rule", "del", "from", f"{source}/32", "blackhole",
               "priority", str(BLACKHOLE_PRIORITY), check=False)
        for netns in list(self._moved):
            remaining = ip("-n", netns, "rule", "list", "priority", str(BLACKHOLE_PRIORITY), check=False)
            if remaining.strip():
                errors.append(f"{netns}: rules left: {remaining.strip()}")
        return errors
