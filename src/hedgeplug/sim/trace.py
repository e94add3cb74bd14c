"""The event trace of a simulation run and its digest.

Every line is `<virtual time> <who> <what>`; the digest is a hash over all
lines in order, so equal digests mean the runs did the same things at the
same virtual instants. Only recent lines stay in memory (for the context of
a violation); a sink file can keep them all.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import IO

import attrs


@attrs.define
class Violation:
    """The first time a run broke an invariant, with the trace around it."""

    invariant: str
    at: float
    message: str
    before: list[str] = attrs.Factory(list)
    after: list[str] = attrs.Factory(list)

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)


class Trace:
    def __init__(self, keep: int = 400, sink: IO[str] | None = None) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.recent: deque[str] = deque(maxlen=keep)
        self.lines = 0
        self._sink = sink
        self._watching: list[tuple[Violation, int]] = []  # violations still collecting "after"

    def add(self, t: float, who: str, what: str) -> None:
        line = f"{t:.6f} {who} {what}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.lines += 1
        self.recent.append(line)
        if self._sink is not None:
            self._sink.write(line + "\n")
        if self._watching:
            still = []
            for violation, wanted in self._watching:
                violation.after.append(line)
                if wanted > 1:
                    still.append((violation, wanted - 1))
            self._watching = still

    def capture(self, violation: Violation, before: int = 40, after: int = 20) -> Violation:
        """Attach the last `before` lines now and the next `after` lines as they come."""
        violation.before = list(self.recent)[-before:]
        if after:
            self._watching.append((violation, after))
        return violation

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()
