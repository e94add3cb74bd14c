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

from collections.abc import Mapping
from typing import Any

from hedgeplug.plugin import Lease, Member, ObservedNode, Route, RouteResponse, View, hookimpl
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

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


class _Ignored:
    """What a node that is not (or no longer) watched records into: nothing.
    A stopping node still releases its lease and says goodbye; counting that
    would bring back the series its stop just removed."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_IGNORED = _Ignored()


def _record(node: ObservedNode, family: Any, *more: str) -> Any:
    if NODES.get(node) is None:
        return _IGNORED
    return metrics.SERIES.child(family, node.cluster, node.id, *more)


@hookimpl
def hedgeplug_node_started(node: ObservedNode) -> None:
    NODES.add(node)
    LISTENER.open_if_asked()


@hookimpl
def hedgeplug_node_stopping(node: ObservedNode) -> None:
    for gone in (node, *NODES.remove(node)):
        metrics.SERIES.forget(gone.cluster, gone.id)
    if not len(NODES):
        LISTENER.close()


@hookimpl
def hedgeplug_leader_changed(node: ObservedNode, lease: Lease | None, previous: Lease | None) -> None:
    _record(node, metrics.LEADER_CHANGES).inc()
    watched = NODES.get(node)
    if lease is None or watched is None:
        return
    if watched.last_holder is not None and lease.holder != watched.last_holder:
        _record(node, metrics.FAILOVERS).inc()
    watched.last_holder = lease.holder


@hookimpl
def hedgeplug_members_changed(
    node: ObservedNode, view: View, joined: tuple[Member, ...], left: tuple[Member, ...]
) -> None:
    if joined:
        _record(node, metrics.JOINS).inc(len(joined))
    if left:
        _record(node, metrics.LEAVES).inc(len(left))


@hookimpl
def hedgeplug_store_call(node: ObservedNode, operation: str, seconds: float, error: str | None) -> None:
    _record(node, metrics.STORE_SECONDS, operation).observe(seconds)
    if error is not None:
        _record(node, metrics.STORE_ERRORS, operation, error).inc()


@hookimpl
def hedgeplug_messaging_call(node: ObservedNode, operation: str, seconds: float, error: str | None) -> None:
    timed = metrics.MESSAGING.get(operation)
    if timed is None:  # an operation this version does not know: not worth a failure
        return
    histogram, errors = timed
    _record(node, histogram).observe(seconds)
    if error is not None:
        _record(node, errors, error).inc()


@hookimpl
def hedgeplug_http_routes(node: ObservedNode) -> Mapping[str, Route]:
    return {METRICS_PATH: render}
