"""Lifeguard's local health: a node that misses acks may itself be the slow
one (CPU starved, paused, on a lossy link), so it trusts its own judgement
less: it probes less often and waits longer before blaming others.

The score runs from 0 (healthy) to max-1; timeouts and the probe period are
multiplied by score + 1.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max(1, max_multiplier)
        self.score = 0

    def apply(self, delta: int) -> int:
        """Move the score by `delta`, kept within [0, max-1]; returns the new score."""
        self.score = min(self.max - 1, max(0, self.score + delta))
        return self.score

    def scale(self, seconds: float) -> float:
        return seconds * (self.score + 1)

    @property
    def healthy(self) -> bool:
        return self.score == 0
