"""What one run produced: its digest, metrics, traffic and findings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .metrics import Metrics
from .network import SimNetwork
from .simnode import SimNode
from .trace import Trace, Violation


@attrs.frozen
class Result:
    scenario: str
    params: dict[str, Any]
    seed: int
    membership: str
    digest: str
    trace_lines: int
    virtual_seconds: float
    wall_seconds: float
    nodes_started: int
    metrics: dict[str, Any]
    traffic: dict[str, float]
    network: dict[str, Any]
    violations: int
    first_violation: Violation | None
    violation_counts: dict[str, int]
    series: list[dict[str, float]]
    bounds: dict[str, Any] = attrs.Factory(dict)

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def to_json(self, series: bool = False) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=True)
        if not series:
            out.pop("series")
        out["ok"] = self.ok
        return out


def traffic(nodes: Iterable[SimNode], end: float) -> dict[str, float]:
    """Messages and bytes each node sent per second of its life."""
    frames = bytes_out = 0
    node_seconds = 0.0
    for sn in nodes:
        if sn.node is None:
            continue
        stats = sn.node.parts.transport.stats
        frames += stats.frames_out
        bytes_out += stats.bytes_out
        node_seconds += (sn.stopped_at if sn.stopped_at is not None else end) - sn.started_at
    per = node_seconds or 1.0
    return {
        "node_seconds": round(node_seconds, 3),
        "messages_per_node_per_second": round(frames / per, 3),
        "bytes_per_node_per_second": round(bytes_out / per, 1),
    }


def network_figures(net: SimNetwork) -> dict[str, Any]:
    return {
        "sent": net.stats.sent,
        "delivered": net.stats.delivered,
        "duplicated": net.stats.duplicated,
        "reordered": net.stats.reordered,
        "dropped": dict(sorted(net.stats.dropped.items())),
    }


def build_result(
    *,
    name: str,
    params: dict[str, Any],
    seed: int,
    membership: str,
    trace: Trace,
    end: float,
    wall: float,
    nodes: dict[str, SimNode],
    metrics: Metrics,
    network: SimNetwork,
    violations: list[Violation],
    violation_counts: dict[str, int],
    bounds: dict[str, Any],
) -> Result:
    return Result(
        scenario=name,
        params=params,
        seed=seed,
        membership=membership,
        digest=trace.digest,
        trace_lines=trace.lines,
        virtual_seconds=round(end, 6),
        wall_seconds=round(wall, 3),
        nodes_started=len(nodes),
        metrics=metrics.to_json(),
        traffic=traffic(nodes.values(), end),
        network=network_figures(network),
        violations=sum(violation_counts.values()),
        first_violation=violations[0] if violations else None,
        violation_counts=dict(sorted(violation_counts.items())),
        series=[attrs.asdict(p) for p in metrics.series],
        bounds=bounds,
    )
