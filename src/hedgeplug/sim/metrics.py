"""What a simulation measures: groups, agreement, join / detection / failover
and convergence times, leader overlap, and traffic per node.

The harness feeds `Metrics` a `Snapshot` at every sample and tells it about
changes (starts, crashes, faults); times are virtual seconds.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

import attrs

from ..stats import percentile


def distinct_views(views: Mapping[str, frozenset[str]]) -> list[tuple[frozenset[str], list[str]]]:
    """Each distinct view object with the nodes holding it.

    Nodes of one simulation share view objects (see View.changed), so a large
    cluster has few: checks run per distinct view, not per node, and grouping
    by identity never compares two large sets.
    """
    holders: dict[int, tuple[frozenset[str], list[str]]] = {}
    for node, view in views.items():
        entry = holders.get(id(view))
        if entry is None:
            holders[id(view)] = (view, [node])
        else:
            entry[1].append(node)
    return list(holders.values())


def count_groups(
    views: Mapping[str, frozenset[str]],
    distinct: list[tuple[frozenset[str], list[str]]] | None = None,
) -> int:
    """Connected components of "a has b in its view" over the nodes in `views`,
    leaving out nodes that are still joining (no view, in nobody's view).

    Nodes holding the same view are joined in one pass over that view (all of
    them reach its live members), so a converged cluster costs O(n), not
    O(n^2). `distinct` is `distinct_views(views)` when the caller has it.
    """
    parent = {node: node for node in views}
    nodes = frozenset(parent)

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    referenced: set[str] = set()
    for view, holders in distinct if distinct is not None else distinct_views(views):
        live = view & nodes
        if not live:
            continue  # an empty (or all-dead) view connects its holders to nobody
        referenced |= live
        anchor = min(live)
        for node in holders:
            union(anchor, node)
        for member in live:
            union(anchor, member)
    # A node that holds no view yet and is in nobody's view is still joining
    # (its join time counts that), not a group of its own.
    counted = [n for n, view in views.items() if view or n in referenced]
    return len({find(node) for node in counted})


@attrs.frozen
class Snapshot:
    """The cluster at one sampled instant (live nodes only)."""

    t: float
    live: frozenset[str]
    views: Mapping[str, frozenset[str]]
    leaders: tuple[str, ...]
    groups: int
    agreement: float  # share of live nodes whose view is exactly the live set
    token: int  # highest fencing token among current leaders (0 when none)

    @property
    def converged(self) -> bool:
        return bool(self.live) and self.groups == 1 and self.agreement == 1.0


@attrs.define
class SeriesPoint:
    t: float
    size: int
    groups: int
    agreement: float
    leaders: int
    token: int


def _summary(values: Iterable[float]) -> dict[str, float] | None:
    data = sorted(values)
    if not data:
        return None
    return {
        "count": len(data),
        "min": round(data[0], 4),
        "median": round(statistics.median(data), 4),
        "p95": round(percentile(data, 0.95), 4),
        "max": round(data[-1], 4),
    }


class Metrics:
    def __init__(self, series_every: float = 0.25) -> None:
        self.series: list[SeriesPoint] = []
        self._series_every = series_every
        self._next_point = 0.0
        self.last_change = 0.0
        self.last_change_what = "start"
        self.converged_at: float | None = None
        self.join_times: list[float] = []
        self.detection_times: list[float] = []
        self.leave_times: list[float] = []
        self._graceful: set[str] = set()
        self.failover_times: list[float] = []
        self.unresolved: dict[str, int] = {"join": 0, "detection": 0, "failover": 0}
        self._joining: dict[str, float] = {}
        self._leaving: dict[str, float] = {}
        self._failover_since: float | None = None
        self._failover_from: str | None = None
        self.overlap_samples = 0
        self.overlap_seconds = 0.0
        self.leaderless_seconds = 0.0  # after the first leader appeared
        self._had_leader = False
        self.max_groups_after_change = 0
        self.final: Snapshot | None = None
        self._last_t = 0.0

    # ------------------------------------------------------------ changes

    def change(self, t: float, what: str) -> None:
        self.last_change = t
        self.last_change_what = what
        self.converged_at = None
        self.max_groups_after_change = 0

    def started(self, node: str, t: float) -> None:
        self._joining[node] = t

    def gone(self, node: str, t: float, graceful: bool = False) -> None:
        """A node crashed or stopped: detection (or, for a graceful stop, the
        leave) runs until no live view holds it."""
        self._joining.pop(node, None)
        self._leaving[node] = t
        if graceful:
            self._graceful.add(node)

    @property
    def pending_departures(self) -> dict[str, float]:
        """Nodes gone but still in some live view, with the time they went."""
        return self._leaving

    def leader_lost(self, old: str, t: float) -> None:
        if self._failover_since is None:
            self._failover_since = t
            self._failover_from = old

    # ------------------------------------------------------------ samples

    def sample(self, snap: Snapshot, views_changed: bool) -> None:
        dt = snap.t - self._last_t
        self._last_t = snap.t
        if len(snap.leaders) > 1:
            self.overlap_samples += 1
            self.overlap_seconds += dt
        if snap.leaders:
            self._had_leader = True
        elif self._had_leader and snap.live:
            self.leaderless_seconds += dt
        self.leaders_seen(snap.t, snap.leaders)
        if views_changed or self._joining or self._leaving:
            self._resolve_membership(snap)
        if snap.converged:
            if self.converged_at is None:
                self.converged_at = snap.t
        else:
            self.converged_at = None
        if snap.t >= self.last_change:
            self.max_groups_after_change = max(self.max_groups_after_change, snap.groups)
        if snap.t >= self._next_point:
            self._next_point = snap.t + self._series_every
            self.series.append(
                SeriesPoint(
                    snap.t,
                    len(snap.live),
                    snap.groups,
                    snap.agreement,
                    len(snap.leaders),
                    snap.token,
                )
            )
        self.final = snap

    def leaders_seen(self, t: float, leaders: tuple[str, ...]) -> None:
        """Failover ends when a node other than the lost leader leads."""
        if self._failover_since is not None:
            if any(leader != self._failover_from for leader in leaders):
                self.failover_times.append(t - self._failover_since)
                self._failover_since = None

    def _resolve_membership(self, snap: Snapshot) -> None:
        # Distinct views only: "in every live view" and "in no live view" do
        # not depend on how many nodes hold the same one.
        views = [view for view, _ in distinct_views({n: snap.views[n] for n in snap.live})]
        for node in sorted(self._joining):
            if node not in snap.live:
                continue
            if all(node in v for v in views):
                self.join_times.append(snap.t - self._joining.pop(node))
        for node in sorted(self._leaving):
            if not any(node in v for v in views):
                took = snap.t - self._leaving.pop(node)
                if node in self._graceful:
                    self._graceful.discard(node)
                    self.leave_times.append(took)
                else:
                    self.detection_times.append(took)

    def finish(self) -> None:
        self.unresolved = {
            "join": len(self._joining),
            "detection": len(self._leaving),
            "failover": int(self._failover_since is not None),
        }

    # ------------------------------------------------------------ report

    @property
    def convergence_time(self) -> float | None:
        if self.converged_at is None:
            return None
        return max(0.0, self.converged_at - self.last_change)

    def to_json(self) -> dict[str, object]:
        final = self.final
        return {
            "final_size": len(final.live) if final else 0,
            "final_groups": final.groups if final else 0,
            "final_agreement": final.agreement if final else 0.0,
            "max_groups_after_last_change": self.max_groups_after_change,
            "last_change": {"t": round(self.last_change, 4), "what": self.last_change_what},
            "convergence_time": None
            if self.convergence_time is None
            else round(self.convergence_time, 4),
            "join_time": _summary(self.join_times),
            "detection_time": _summary(self.detection_times),
            "leave_time": _summary(self.leave_times),
            "failover_time": _summary(self.failover_times),
            "unresolved": self.unresolved,
            "leader_overlap": {
                "samples": self.overlap_samples,
                "seconds": round(self.overlap_seconds, 4),
            },
            "leaderless_seconds": round(self.leaderless_seconds, 4),
        }
