"""Event metrics: counted and timed as the node's hooks report them.

They live in prometheus_client's default registry, next to the process
metrics and whatever the application registers there, so one /metrics shows
them all. Every family has the labels `cluster` and `node` (the node's id):
one process normally runs one node, but a test or an embedding application
may run several.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from .collector import NODE_LABELS

# Seconds: from a local store's sub-millisecond answer to a stalled call.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

JOINS = Counter("hedgeplug_joins", "members that joined this node's view", NODE_LABELS)
LEAVES = Counter("hedgeplug_leaves", "members that left this node's view (gone, dead or departed)", NODE_LABELS)
LEADER_CHANGES = Counter(
    "hedgeplug_leader_changes", "changes of the leader this node knows (holder or token), losing it included", NODE_LABELS
)
FAILOVERS = Counter(
    "hedgeplug_failovers", "a new leader other than the last one this node knew", NODE_LABELS
)
STORE_SECONDS = Histogram(
    "hedgeplug_store_call_seconds",
    "lock store calls of the election, by operation (acquire, renew, release, current)",
    [*NODE_LABELS, "operation"],
    buckets=LATENCY_BUCKETS,
)
STORE_ERRORS = Counter(
    "hedgeplug_store_errors",
    "lock store calls that failed, by operation and kind (exception class, cancelled, timeout)",
    [*NODE_LABELS, "operation", "kind"],
)
SEND_SECONDS = Histogram(
    "hedgeplug_send_seconds",
    "node.send from the call to the leader's reply, retries through a failover included",
    NODE_LABELS,
    buckets=LATENCY_BUCKETS,
)
SEND_ERRORS = Counter("hedgeplug_send_errors", "node.send calls that failed, by kind", [*NODE_LABELS, "kind"])
BROADCAST_SECONDS = Histogram(
    "hedgeplug_broadcast_seconds",
    "node.broadcast from the call to its last reply",
    NODE_LABELS,
    buckets=LATENCY_BUCKETS,
)
BROADCAST_ERRORS = Counter(
    "hedgeplug_broadcast_errors", "node.broadcast calls that failed or were abandoned, by kind", [*NODE_LABELS, "kind"]
)

MESSAGING = {"send": (SEND_SECONDS, SEND_ERRORS), "broadcast": (BROADCAST_SECONDS, BROADCAST_ERRORS)}


class NodeSeries:
    """The labelled children made for each node, so that they go when the node
    goes. Without this a process that runs many nodes one after another (an
    embedding application's tests, a long-lived worker that restarts its node)
    keeps every finished node's series: /metrics grows without bound and each
    scrape, which runs on a node's event loop, takes longer and longer."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], dict[tuple[Any, ...], Any]] = {}

    def child(self, family: MetricWrapperBase, cluster: str, node: str, *more: str) -> Any:
        """`family.labels(cluster, node, *more)`, looked up once (a send pays one observe)."""
        made = self._made.setdefault((cluster, node), {})
        key = (id(family), *more)
        found = made.get(key)
        if found is None:
            found = made[key] = (family, (cluster, node, *more), family.labels(cluster, node, *more))
        return found[2]

    def forget(self, cluster: str, node: str) -> None:
        for family, values, _ in self._made.pop((cluster, node), {}).values():
            try:
                family.remove(*values)
            except KeyError:  # already gone
                pass

    def __len__(self) -> int:
        return len(self._made)


SERIES = NodeSeries()
