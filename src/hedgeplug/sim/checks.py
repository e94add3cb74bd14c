"""Invariant checkers (docs/design.md, "Invariants"), run on every sampled step.

Each checker sees snapshots, view changes and the end of the run, and
reports through `report(invariant, message)`; the harness keeps the first
violation with the trace around it and counts the rest.
"""

from __future__ import annotations

from collections.abc import Callable

from .metrics import Snapshot

Report = Callable[[str, str], None]


class Checker:
    """Base: every hook is optional."""

    name = "checker"

    def on_sample(self, snap: Snapshot, report: Report) -> None:
        pass

    def on_removed(self, t: float, observer: str, removed: str, report: Report) -> None:
        pass

    def finish(self, t: float, report: Report) -> None:
        pass


class SingleLeader(Checker):
    """Invariant 1a: at most one node believes it leads with a valid lease."""

    name = "single-leader"

    def on_sample(self, snap: Snapshot, report: Report) -> None:
        if len(snap.leaders) > 1:
            report(
                self.name, f"{len(snap.leaders)} nodes believe they lead: {', '.join(snap.leaders)}"
            )


class FencingTokens(Checker):
    """Invariant 1b: every new leadership carries a higher token than all before it."""

    name = "fencing-tokens"

    def __init__(self, token_of: Callable[[str], int]) -> None:
        self._token_of = token_of
        self._seen: set[tuple[str, int]] = set()
        self._highest = 0

    def on_sample(self, snap: Snapshot, report: Report) -> None:
        for leader in snap.leaders:
            token = self._token_of(leader)
            key = (leader, token)
            if key in self._seen:
                continue
            if token <= self._highest:
                report(
                    self.name,
                    f"{leader} leads with token {token}, not above {self._highest} seen before",
                )
            self._seen.add(key)
            self._highest = max(self._highest, token)


class Convergence(Checker):
    """Invariant 2: after the last change, one group whose views all equal the
    live set, within `bound` seconds (checked when the run ends)."""

    name = "convergence"

    def __init__(
        self,
        bound: float | Callable[[], float],
        last_change: Callable[[], float],
        converged_at: Callable[[], float | None],
    ) -> None:
        self._bound = bound
        self._last_change = last_change
        self._converged_at = converged_at
        self.final: Snapshot | None = None

    def on_sample(self, snap: Snapshot, report: Report) -> None:
        self.final = snap

    @property
    def bound(self) -> float:
        return self._bound() if callable(self._bound) else self._bound

    def finish(self, t: float, report: Report) -> None:
        bound = self.bound
        since = t - self._last_change()
        if since < bound:
            return  # the run ended too soon after its last change to judge
        converged = self._converged_at()
        final = self.final
        if converged is None or final is None:
            detail = ""
            if final is not None:
                detail = f" ({final.groups} groups, {final.agreement:.0%} of {len(final.live)} views agree)"
            report(self.name, f"not converged {since:.1f}s after the last change{detail}")
        elif converged - self._last_change() > bound:
            report(
                self.name,
                f"converged only {converged - self._last_change():.1f}s after the last change (bound {bound:.1f}s)",
            )


class NoFlapping(Checker):
    """Invariant 3: a node that has been reachable and healthy for longer than
    `grace` is never removed from a view."""

    name = "no-flapping"

    def __init__(
        self, grace: float, calm_since: Callable[[str, str], float], running: Callable[[str], bool]
    ) -> None:
        self.grace = grace
        self._calm_since = calm_since
        self._running = running

    def on_removed(self, t: float, observer: str, removed: str, report: Report) -> None:
        if not self._running(removed):
            return
        calm = self._calm_since(observer, removed)
        if t - calm > self.grace:
            report(
                self.name,
                f"{observer} removed {removed}, which has been running and reachable "
                f"for {t - calm:.1f}s (grace {self.grace}s)",
            )


class DetectionBound(Checker):
    """Invariant 3: a crashed or departed node is gone from every live view
    within `bound` seconds of leaving (counted from the last disturbance,
    since a partition or outage may legitimately delay it). A callable bound
    is asked once per departed node, at the first sample after it left (the
    bound a strategy states depends on the cluster size it left)."""

    name = "detection"

    def __init__(
        self,
        bound: float | Callable[[], float],
        pending: Callable[[], dict[str, float]],
        calm: Callable[[], float],
    ) -> None:
        self._bound = bound
        self._pending = pending
        self._calm = calm
        self._reported: set[str] = set()
        self._bounds: dict[str, float] = {}

    def bound_for(self, node: str) -> float:
        if not callable(self._bound):
            return self._bound
        if node not in self._bounds:
            self._bounds[node] = self._bound()
        return self._bounds[node]

    def on_sample(self, snap: Snapshot, report: Report) -> None:
        pending = self._pending()
        if not pending:
            return
        calm = self._calm()
        for node in sorted(pending):
            if node in self._reported:
                continue
            bound = self.bound_for(node)
            since = max(pending[node], calm)
            if snap.t - since > bound:
                self._reported.add(node)
                self._bounds.pop(node, None)
                holders = sorted(n for n, view in snap.views.items() if node in view)
                report(
                    self.name,
                    f"{node} left {snap.t - pending[node]:.1f}s ago and is still in the view of "
                    f"{len(holders)} node(s) ({', '.join(holders[:5])}); bound {bound:.1f}s",
                )
