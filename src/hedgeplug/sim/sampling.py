"""Measurement: sampling every node's view at a fixed virtual interval,
feeding the snapshots and view changes to the invariant checkers, and
keeping the violations they report."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hedgeplug.events import LeaderChanged, MembersChanged

from .checks import Checker
from .fleet import Fleet
from .metrics import Metrics, Snapshot, count_groups, distinct_views
from .simnode import SimNode
from .trace import Trace, Violation


class Sampler:
    """Turns the fleet's state into snapshots for the metrics and the checkers."""

    def __init__(
        self,
        fleet: Fleet,
        metrics: Metrics,
        trace: Trace,
        now: Callable[[], float],
        log: Callable[[str, str], None],
    ) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.trace = trace
        self.now = now
        self.log = log
        self.checkers: list[Checker] = []
        self.violations: list[Violation] = []
        self.violation_counts: dict[str, int] = {}
        self._dirty = True
        self._cache: tuple[frozenset[str], dict[str, frozenset[str]], int, float] | None = None
        self._largest_view = 0
        self._last_line = ""

    def use(self, checkers: Sequence[Checker]) -> None:
        self.checkers = list(checkers)

    def mark_dirty(self) -> None:
        """Views may have changed: the next sample recomputes them."""
        self._dirty = True

    def view_sizes(self) -> list[int]:
        """The size of every view at the last sample."""
        return [] if self._cache is None else [len(view) for view in self._cache[1].values()]

    def largest_view(self) -> int:
        """The size of the largest view at the last sample (0 before the first)."""
        return self._largest_view

    # ------------------------------------------------------------ node events

    def on_members(self, sn: SimNode, ev: MembersChanged) -> None:
        if not sn.running:
            return
        sn.view_ids = ev.view.ids
        self._dirty = True
        joined = ",".join(m.id for m in ev.joined)
        left = ",".join(m.id for m in ev.left)
        self.log(sn.id, f"view {ev.view.version} n={len(ev.view)} +{joined} -{left}")
        t = self.now()
        for member in ev.left:
            for checker in self.checkers:
                checker.on_removed(t, sn.id, member.id, self.report)

    def on_leader(self, sn: SimNode, ev: LeaderChanged) -> None:
        if not sn.running:
            return
        lease = ev.lease
        self.log(sn.id, "leader " + ("none" if lease is None else f"{lease.holder}#{lease.token}"))
        self.sample(from_event=True)

    # ------------------------------------------------------------ sampling

    def sample(self, from_event: bool = False) -> None:
        t = self.now()
        live = self.fleet.live_ids()
        # A sample taken for a leader event reuses the views of the last
        # periodic one, so it need not ask whether they changed (comparing
        # the live sets is O(n), and every node's first LeaderChanged comes here).
        views_changed = not from_event and (
            self._dirty or self._cache is None or (self._cache[0] is not live and self._cache[0] != live)
        )
        if views_changed:
            views = {sn.id: sn.view_ids for sn in self.fleet.running()}
            distinct = distinct_views(views)
            groups = count_groups(views, distinct)
            agreeing = sum(len(holders) for view, holders in distinct if view == live)
            agreement = agreeing / len(live) if live else 0.0
            self._largest_view = max((len(view) for view, _ in distinct), default=0)
            self._cache = (live, views, groups, agreement)
            self._dirty = False
        if self._cache is None:
            return
        _, views, groups, agreement = self._cache
        leaders = tuple(sn.id for sn in self.fleet.leaders())
        token = max((self.fleet.leader_token(x) for x in leaders), default=0)
        snap = Snapshot(t, live, views, leaders, groups, agreement, token)
        if from_event:
            self.metrics.leaders_seen(t, leaders)
        else:
            self.metrics.sample(snap, views_changed)
            line = f"size={len(live)} groups={groups} agree={agreement:.3f} leaders={','.join(leaders) or '-'}"
            if line != self._last_line:
                self._last_line = line
                self.log("sample", line)
        for checker in self.checkers:
            checker.on_sample(snap, self.report)

    def finish(self, t: float) -> None:
        for checker in self.checkers:
            checker.finish(t, self.report)

    def report(self, invariant: str, message: str) -> None:
        count = self.violation_counts.get(invariant, 0)
        self.violation_counts[invariant] = count + 1
        if count == 0:
            self.log("VIOLATION", f"{invariant}: {message}")
            violation = Violation(invariant, self.now(), message)
            if not self.violations:
                self.trace.capture(violation)
            self.violations.append(violation)
