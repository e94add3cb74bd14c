"""Scrape-time metrics: what a node already knows, read when Prometheus asks.

Gauges (leadership, token, view) and the counters the node keeps itself
(transport and channel traffic, drops, step-downs and the other node events)
are not copied on every change: the collector reads `node.status()` at scrape
time. A node's state belongs to its event loop, so the read runs there: directly
when the scrape runs on that loop (the health server's route), else through
the loop's token (the fallback listener's thread).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import anyio.lowlevel
from hedgeplug.plugin import ObservedNode
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("hedgeplug.prometheus")

NODE_LABELS = ("cluster", "node")


class Watched:
    """One running node the collector reports on."""

    def __init__(self, node: ObservedNode) -> None:
        self._node = weakref.ref(node)
        self.key = id(node)
        self.cluster = node.cluster
        self.node_id = node.id
        self.id = node.id  # so that a Watched can be forgotten like a node
        self.loop_thread = threading.get_ident()
        self.token = anyio.lowlevel.current_token()
        self.last_holder: str | None = None  # the last leader this node knew, for failovers

    @property
    def labels(self) -> list[str]:
        return [self.cluster, self.node_id]

    def ended(self) -> bool:
        """True when the node's event loop is known to be over: it ran on this
        thread, which now runs another loop (a thread runs one loop at a time)."""
        if self._node() is None:
            return True
        if threading.get_ident() != self.loop_thread:
            return False
        try:
            running = anyio.lowlevel.current_token()
        except Exception:  # no loop runs here now
            return True
        return running.native_token is not self.token.native_token

    def snapshot(self) -> dict[str, Any] | None:
        """The node's state, read on its own event loop; None once it is gone."""
        node = self._node()
        if node is None or self.ended():
            return None
        if threading.get_ident() == self.loop_thread:
            return _read(node)
        try:
            return anyio.from_thread.run_sync(_read, node, token=self.token)
        except Exception as exc:  # the loop has ended (a killed node) or refuses
            log.debug("node %s cannot be read: %s", self.node_id, exc)
            return None


def _read(node: ObservedNode) -> dict[str, Any]:
    status = node.status()
    version = node.view.version
    status["view_version_token"] = version.token
    status["view_version_seq"] = version.seq
    return status


class Nodes:
    """The nodes of this process that have started and not yet stopped."""

    def __init__(self) -> None:
        self._by_id: dict[int, Watched] = {}

    def add(self, node: ObservedNode) -> Watched:
        watched = self._by_id[id(node)] = Watched(node)
        return watched

    def get(self, node: ObservedNode) -> Watched | None:
        return self._by_id.get(id(node))

    def remove(self, node: ObservedNode) -> list[Watched]:
        """Forget `node`, and the nodes whose loop is over (killed nodes never
        say they stop); returns those others, so their series can go too."""
        self._by_id.pop(id(node), None)
        ended = [watched for watched in self._by_id.values() if watched.ended()]
        for watched in ended:
            self._by_id.pop(watched.key, None)
        return ended

    def all(self) -> list[Watched]:
        return list(self._by_id.values())  # a copy: scrapes may run in another thread

    def __len__(self) -> int:
        return len(self._by_id)


class NodeCollector(Collector):
    """Reads every watched node at scrape time (see the module docstring)."""

    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for watched in self.nodes.all():
            status = watched.snapshot()
            if status is None:
                continue
            families.add(watched.labels, status)
        yield from families.all()


class _Families:
    def __init__(self) -> None:
        labels = list(NODE_LABELS)
        self.is_leader = GaugeMetricFamily(
            "hedgeplug_is_leader", "1 while this node holds a valid lease", labels=labels
        )
        self.token = GaugeMetricFamily(
            "hedgeplug_fencing_token", "fencing token of the leader this node knows (0: none)", labels=labels
        )
        self.newest_token = GaugeMetricFamily(
            "hedgeplug_newest_token", "highest fencing token this node has seen", labels=labels
        )
        self.members = GaugeMetricFamily(
            "hedgeplug_view_members", "live members in this node's view", labels=labels
        )
        self.version_token = GaugeMetricFamily(
            "hedgeplug_view_version_token", "token part of the view version (the stamping leader's token)", labels=labels
        )
        self.version_seq = GaugeMetricFamily(
            "hedgeplug_view_version_seq", "sequence part of the view version", labels=labels
        )
        self.uptime = GaugeMetricFamily(
            "hedgeplug_uptime_seconds", "seconds since the node started", labels=labels
        )
        self.step_downs = CounterMetricFamily(
            "hedgeplug_step_downs", "times this node stopped leading without releasing (lease lost or renewal late)", labels=labels
        )
        self.events = CounterMetricFamily(
            "hedgeplug_node_events", "the node's own counters (acquired, released, renew-errors, handler-errors, ...)", labels=[*labels, "event"]
        )
        self.frames = CounterMetricFamily(
            "hedgeplug_transport_frames", "frames through the transport", labels=[*labels, "direction"]
        )
        self.bytes = CounterMetricFamily(
            "hedgeplug_transport_bytes", "bytes through the transport", labels=[*labels, "direction"]
        )
        self.channel_frames = CounterMetricFamily(
            "hedgeplug_channel_frames", "messages sent and handled per channel (replies not counted)", labels=[*labels, "channel", "direction"]
        )
        self.channel_bytes = CounterMetricFamily(
            "hedgeplug_channel_bytes", "bytes of the messages sent and handled per channel", labels=[*labels, "channel", "direction"]
        )
        self.drops = CounterMetricFamily(
            "hedgeplug_dropped_frames", "frames dropped, by layer (transport, node) and reason", labels=[*labels, "layer", "reason"]
        )

    def add(self, labels: list[str], status: dict[str, Any]) -> None:
        self.is_leader.add_metric(labels, 1.0 if status["is_leader"] else 0.0)
        self.token.add_metric(labels, status["token"])
        self.newest_token.add_metric(labels, status["newest_token"])
        self.members.add_metric(labels, len(status["members"]))
        self.version_token.add_metric(labels, status["view_version_token"])
        self.version_seq.add_metric(labels, status["view_version_seq"])
        self.uptime.add_metric(labels, status["uptime"])
        counters: dict[str, int] = status["counters"]
        self.step_downs.add_metric(labels, counters.get("step-downs", 0))
        for name, value in counters.items():
            if name.startswith("drop."):
                self.drops.add_metric([*labels, "node", name.removeprefix("drop.")], value)
            else:
                self.events.add_metric([*labels, name], value)
        transport = status["transport"]
        for direction in ("in", "out"):
            self.frames.add_metric([*labels, direction], transport[f"frames_{direction}"])
            self.bytes.add_metric([*labels, direction], transport[f"bytes_{direction}"])
        for reason, value in transport["dropped"].items():
            self.drops.add_metric([*labels, "transport", reason], value)
        for channel, tally in status.get("channels", {}).items():
            for direction in ("in", "out"):
                self.channel_frames.add_metric([*labels, channel, direction], tally[f"frames_{direction}"])
                self.channel_bytes.add_metric([*labels, channel, direction], tally[f"bytes_{direction}"])

    def all(self) -> list[Metric]:
        return [value for value in vars(self).values() if isinstance(value, Metric)]
