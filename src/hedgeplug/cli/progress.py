"""A progress line on stderr for commands that run for a while (sim, bench).

Shown only when stderr is a terminal and the command does not print JSON,
and only once the run has taken longer than `after` seconds; rewritten in
place at most every `every` seconds, and cleared when the run ends. Wall
time here is the command's own, never protocol time.
"""

from __future__ import annotations

import sys
import time
from typing import IO


class ProgressLine:
    def __init__(
        self, *, enabled: bool = True, after: float = 2.0, every: float = 0.5, stream: IO[str] | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.after = after
        self.every = every
        self.started = time.perf_counter()
        self._last = 0.0
        self._width = 0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.started < self.after or now - self._last < self.every:
            return
        self._last = now
        line = f"{text} [{now - self.started:.0f}s]"
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
