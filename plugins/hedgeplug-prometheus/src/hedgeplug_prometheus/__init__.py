"""Prometheus metrics for hedgeplug nodes, built on the observer hooks only.

Installed next to hedgeplug, it is loaded like any plugin (entry point
`prometheus` in the `hedgeplug` group) and needs no configuration:

- observer hooks count joins, leaves, leader changes and failovers;
- timing hooks feed the store call, send and broadcast histograms;
- a collector reads leadership, token, view and the node's own counters
  (traffic, drops, step-downs) at scrape time (collector.py);
- `hedgeplug_http_routes` serves it all as /metrics on the node's health
  port; HEDGEPLUG_METRICS_LISTEN=HOST:PORT opens a listener of its own
  instead (listener.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from hedgeplug.plugin import Lease, Member, ObservedNode, Route, RouteResponse, View, hookimpl
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest

from . import metrics
from .collector import NodeCollector, Nodes
from .listener import LISTEN_ENV, Listener

__all__ = ["LISTEN_ENV", "LISTENER", "METRICS_PATH", "NODES", "render"]

METRICS_PATH = "/metrics"

NODES = Nodes()
LISTENER = Listener()
REGISTRY.register(NodeCollector(NODES))


def render() -> RouteResponse:
    """The /metrics response: every metric of prometheus_client's default registry."""
    return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)


@hookimpl
def hedgeplug_node_started(node: ObservedNode) -> None:
    NODES.add(node)
    LISTENER.open_if_asked()


@hookimpl
def hedgeplug_node_stopping(node: ObservedNode) -> None:
    NODES.remove(node)
    if not len(NODES):
        LISTENER.close()


@hookimpl
def hedgeplug_leader_changed(node: ObservedNode, lease: Lease | None, previous: Lease | None) -> None:
    metrics.LEADER_CHANGES.labels(node.cluster, node.id).inc()
    watched = NODES.get(node)
    if lease is None or watched is None:
        return
    if watched.last_holder is not None and lease.holder != watched.last_holder:
        metrics.FAILOVERS.labels(node.cluster, node.id).inc()
    watched.last_holder = lease.holder


@hookimpl
def hedgeplug_members_changed(
    node: ObservedNode, view: View, joined: tuple[Member, ...], left: tuple[Member, ...]
) -> None:
    if joined:
        metrics.JOINS.labels(node.cluster, node.id).inc(len(joined))
    if left:
        metrics.LEAVES.labels(node.cluster, node.id).inc(len(left))


@functools.cache
def _timer(family: Histogram, *labels: str) -> Any:
    """A histogram's child for these labels, looked up once (a send pays one observe)."""
    return family.labels(*labels)


@hookimpl
def hedgeplug_store_call(node: ObservedNode, operation: str, seconds: float, error: str | None) -> None:
    _timer(metrics.STORE_SECONDS, node.cluster, node.id, operation).observe(seconds)
    if error is not None:
        metrics.STORE_ERRORS.labels(node.cluster, node.id, operation, error).inc()


@hookimpl
def hedgeplug_messaging_call(node: ObservedNode, operation: str, seconds: float, error: str | None) -> None:
    timed = metrics.MESSAGING.get(operation)
    if timed is None:  # an operation this version does not know: not worth a failure
        return
    histogram, errors = timed
    _timer(histogram, node.cluster, node.id).observe(seconds)
    if error is not None:
        errors.labels(node.cluster, node.id, error).inc()


@hookimpl
def hedgeplug_http_routes(node: ObservedNode) -> Mapping[str, Route]:
    return {METRICS_PATH: render}
