"""How `hedgeplug bench` shows its figures: a table of the run's settings
and single figures, a table of the measured distributions, and a plot of
every sample with `--plot`."""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import HedgeplugError
from .common import table

SUMMARY_KEYS = ("count", "median", "p99", "max")


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == set(SUMMARY_KEYS)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_figures(figures: dict[str, Any]) -> str:
    """Two tables: single figures (FIGURE VALUE, '-' for none) and the
    measured distributions (MEASURED COUNT MEDIAN P99 MAX)."""
    single = [[k, _text(v)] for k, v in figures.items() if not _is_summary(v)]
    spread = [[k, *(_text(v[s]) for s in SUMMARY_KEYS)] for k, v in figures.items() if _is_summary(v)]
    out = [table(single, ["FIGURE", "VALUE"])]
    if spread:
        out += ["", table(spread, ["MEASURED", "COUNT", "MEDIAN", "P99", "MAX"])]
    return "\n".join(out)


def check_plotting() -> None:
    """Fail before the run, not after it, when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise HedgeplugError("--plot needs matplotlib: pip install 'hedgeplug[plot]'")


def plot_samples(samples: dict[str, list[float]], figures: dict[str, Any], path: str) -> None:
    """One panel per measured quantity: every sample as a point, the median as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = {k: v for k, v in samples.items() if v}
    if not measured:
        raise HedgeplugError("--plot: this run measured no samples to plot")
    fig, axes = plt.subplots(len(measured), 1, figsize=(7, 2.2 * len(measured)), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], measured.items(), strict=True):
        ax.plot(range(1, len(values) + 1), values, "o", markersize=4)
        median = sorted(values)[len(values) // 2]
        ax.axhline(median, linestyle="--", linewidth=1, label=f"median {median:.3g}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("sample")
        ax.legend(fontsize=8, loc="upper right")
    title = f"hedgeplug bench {figures.get('scenario')} ({figures.get('membership')}, {figures.get('transport')})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise HedgeplugError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
