"""Timing loops for benchmarks: measure an async operation a bounded number of
times within a time budget, and print its latency beside a baseline measured
in the same run."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Awaitable, Callable, Iterator, Sequence

import anyio

from ..stats import percentile

__all__ = ["Stopwatch", "measure", "percentile", "report", "summary"]


class Stopwatch:
    """Collects durations by name: ``with watch.timing("acquire"): await ...``."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        started = anyio.current_time()
        yield
        self.samples.setdefault(name, []).append(anyio.current_time() - started)


async def measure(
    cycle: Callable[[Stopwatch], Awaitable[object]], *, count: int, seconds: float,
    warmup: int = 5,
) -> dict[str, list[float]]:
    """Run `cycle(watch)` `warmup` times unmeasured, then up to `count` times or
    until `seconds` have passed; the durations (seconds, anyio's clock) that the
    cycles timed, by name."""
    for _ in range(warmup):
        await cycle(Stopwatch())
    watch = Stopwatch()
    with anyio.move_on_after(seconds):
        for _ in range(count):
            await cycle(watch)
    return watch.samples


def summary(samples: Sequence[float], unit: float = 1000.0) -> dict[str, float]:
    """n, p50, p99, max and mean of `samples` times `unit` (default: seconds to ms)."""
    scaled = [s * unit for s in samples]
    return {
        "n": len(scaled),
        "p50": percentile(scaled, 0.5),
        "p99": percentile(scaled, 0.99),
        "max": max(scaled),
        "mean": statistics.fmean(scaled),
    }


def report(name: str, samples: Sequence[float], baseline: Sequence[float] | None = None) -> None:
    """Print one line of milliseconds for `samples`; with a baseline, also the
    ratio of the medians (how many baseline round trips one operation costs)."""
    if not samples:
        print(f"{name:<9} no samples (the time budget ran out first)", flush=True)
        return
    s = summary(samples)
    line = (f"{name:<9} n={int(s['n']):<5} p50={s['p50']:7.3f} ms  p99={s['p99']:7.3f} ms  "
            f"max={s['max']:7.3f} ms  mean={s['mean']:7.3f} ms")
    if baseline:
        line += f"  p50 = {s['p50'] / summary(baseline)['p50']:.1f}x baseline"
    print(line, flush=True)
