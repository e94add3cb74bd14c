"""Semaphore invariants for simulated runs (the `semaphore-faults` scenario).

Holders report themselves: `entered` right after the semaphore handed them a
slot, `left` when their body ended (normally, by loss, or by a crash). The
checker keeps every such interval on the virtual clock and reports:

- "semaphore-limit": more than `limit` bodies running at one instant (checked
  when each body starts, and exactly over all intervals at the end), or a
  body still running after its permit stopped being valid;
- "semaphore-fencing": a slot granted by the store with a token not above
  every earlier token of that slot;
- "semaphore-return": a slot of a crashed holder not granted again within
  the stated bound while others were waiting;
- "semaphore-progress": no slot handed out in the last phase of the run.

It has the harness's checker hooks (on_sample, on_removed, finish) without
subclassing, so a scenario adds it with ``sim.checkers.append(checker)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = Callable[[str, str], None]


class SemaphoreChecker:
    name = "semaphore"

    def __init__(self, sim: Any, limit: int, slot_locks: list[str]) -> None:
        self.sim = sim
        self.limit = limit
        self.slot_locks = slot_locks
        self.open: dict[int, tuple[str, float, Any]] = {}  # id(permit) -> holder, entered, permit
        self.intervals: list[tuple[float, float, str, int, int]] = []  # start, end, who, slot, token
        self.lost = 0
        self.peak = 0
        self._returns: list[tuple[str, float, float]] = []  # slot lock, crash time, bound
        self._progress_since: float | None = None

    # ------------------------------------------------------------ holders report

    def entered(self, who: str, permit: Any) -> None:
        now = self.sim.now()
        self.open[id(permit)] = (who, now, permit)
        self.sim.log(who, f"sem enter slot={permit.slot} token={permit.token}")
        held = len(self.open)
        self.peak = max(self.peak, held)
        if held > self.limit:
            holders = ", ".join(sorted(f"{w}[{p.slot}]" for w, _t, p in self.open.values()))
            self.sim.report("semaphore-limit", f"{held} holders at once, limit {self.limit}: {holders}")

    def left(self, who: str, permit: Any, how: str) -> None:
        now = self.sim.now()
        entry = self.open.pop(id(permit), None)
        if entry is None:
            return
        _who, started, _permit = entry
        self.intervals.append((started, now, who, permit.slot, permit.token))
        if how == "lost":
            self.lost += 1
        self.sim.log(who, f"sem leave slot={permit.slot} token={permit.token} {how}")
        # The body must end by the time its belief ends (a tiny slack for the same-instant deadline).
        if now > permit.valid_until + 1e-6:
            self.sim.report(
                "semaphore-limit",
                f"{who} still held slot {permit.slot} {now - permit.valid_until:.3f}s after its permit ended",
            )

    def expect_return(self, slot: int, bound: float) -> None:
        """A holder of `slot` crashed now: the slot must be granted again within `bound`."""
        self._returns.append((self.slot_locks[slot], self.sim.now(), bound))

    def expect_progress_from(self, t: float) -> None:
        self._progress_since = t

    # ------------------------------------------------------------ harness hooks

    def on_sample(self, snap: Any, report: Report) -> None:
        pass

    def on_removed(self, t: float, observer: str, removed: str, report: Report) -> None:
        pass

    def finish(self, t: float, report: Report) -> None:
        for who, started, permit in list(self.open.values()):
            self.intervals.append((started, t, who, permit.slot, permit.token))
        self.open.clear()
        overlap, at = max_overlap([(s, e) for s, e, *_ in self.intervals])
        if overlap > self.limit:
            report("semaphore-limit", f"{overlap} holder intervals overlap at t={at:.3f}, limit {self.limit}")
        self._check_fencing(report)
        self._check_returns(report)
        if self._progress_since is not None and not any(s >= self._progress_since for s, *_ in self.intervals):
            report("semaphore-progress", f"no slot handed out after t={self._progress_since:.1f}")

    def _check_fencing(self, report: Report) -> None:
        highest: dict[str, int] = {}
        for grant in self.sim.store.grants:
            if grant.lock not in self.slot_locks:
                continue
            if grant.token <= highest.get(grant.lock, 0):
                report("semaphore-fencing", f"{grant.lock} granted token {grant.token} after {highest[grant.lock]}")
            highest[grant.lock] = max(highest.get(grant.lock, 0), grant.token)

    def _check_returns(self, report: Report) -> None:
        for lock, crashed_at, bound in self._returns:
            again = [g.at for g in self.sim.store.grants if g.lock == lock and g.at > crashed_at]
            if not again or min(again) - crashed_at > bound:
                took = f"{min(again) - crashed_at:.2f}s" if again else "never"
                report("semaphore-return", f"{lock} of a crashed holder granted again after {took}, bound {bound:.2f}s")

    def summary(self) -> dict[str, Any]:
        return {"holds": len(self.intervals), "lost": self.lost, "peak": self.peak, "limit": self.limit}


def max_overlap(intervals: list[tuple[float, float]]) -> tuple[int, float]:
    """The most intervals open at one instant, and the first such instant.
    An interval ending at t does not overlap one starting at t."""
    events = sorted([(e, -1) for _s, e in intervals] + [(s, 1) for s, _e in intervals])
    depth = peak = 0
    at = 0.0
    for t, step in events:
        depth += step
        if depth > peak:
            peak, at = depth, t
    return peak, at
