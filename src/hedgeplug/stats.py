"""The one percentile of the project, for the simulator, the benchmarks and the
test kit alike (a bottom-layer module: it imports nothing of hedgeplug)."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The value at fraction `q` (0..1) of the sorted values: the smallest value
    with at least a `q` share of the values below it (nearest rank, no
    interpolation, so it is always one of the measured values).

    Raises ValueError for no values or `q` outside 0..1."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile fraction must be within 0..1, got {q}")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
