"""Presenting simulation results: a readable table, JSON, and a plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hedgeplug.errors import HedgeplugError

from .result import Result


def _fmt_summary(summary: dict[str, float] | None) -> str:
    if not summary:
        return "-"
    return f"median {summary['median']:.2f}s  p95 {summary['p95']:.2f}s  max {summary['max']:.2f}s  (n={summary['count']})"


def format_result(result: Result) -> str:
    m = result.metrics
    conv = m["convergence_time"]
    rows = [
        ("scenario", f"{result.scenario} {' '.join(f'{k}={v}' for k, v in result.params.items())}"),
        ("membership / seed", f"{result.membership} / {result.seed}"),
        ("nodes started", str(result.nodes_started)),
        ("virtual / wall time", f"{result.virtual_seconds:.1f}s / {result.wall_seconds:.2f}s"),
        ("final size / groups", f"{m['final_size']} / {m['final_groups']}"),
        ("views agreeing", f"{m['final_agreement']:.0%}"),
        ("most groups after last change", str(m["max_groups_after_last_change"])),
        ("last change", f"{m['last_change']['what']} at {m['last_change']['t']:.2f}s"),
        ("convergence time", "not converged" if conv is None else f"{conv:.2f}s"),
        ("join time", _fmt_summary(m["join_time"])),
        ("detection time (crash)", _fmt_summary(m["detection_time"])),
        ("leave time (graceful)", _fmt_summary(m["leave_time"])),
        ("failover time", _fmt_summary(m["failover_time"])),
        (
            "unresolved join/detect/failover",
            "{join}/{detection}/{failover}".format(**m["unresolved"]),
        ),
        (
            "two-leader periods",
            f"{m['leader_overlap']['samples']} samples, {m['leader_overlap']['seconds']:.3f}s",
        ),
        ("time without a leader", f"{m['leaderless_seconds']:.2f}s"),
        ("messages / node / s", f"{result.traffic['messages_per_node_per_second']:.2f}"),
        ("bytes / node / s", f"{result.traffic['bytes_per_node_per_second']:.0f}"),
        (
            "network drops",
            ", ".join(f"{k}={v}" for k, v in result.network["dropped"].items()) or "none",
        ),
        (
            "violations",
            "none"
            if result.ok
            else ", ".join(f"{k}={v}" for k, v in result.violation_counts.items()),
        ),
        (
            "bounds detection / convergence",
            " / ".join(
                f"{b['seconds']:.1f}s ({b['source']})"
                for b in (result.bounds.get("detection"), result.bounds.get("convergence"))
                if b
            )
            or "-",
        ),
        ("trace digest", f"{result.digest} ({result.trace_lines} lines)"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    v = result.first_violation
    if v is not None:
        lines += [
            "",
            f"FIRST VIOLATION at {v.at:.6f}s: {v.invariant}: {v.message}",
            "trace before:",
        ]
        lines += ["  " + line for line in v.before[-25:]]
        lines += ["trace after:"] + ["  " + line for line in v.after[:10]]
    return "\n".join(lines)


def format_runs(results: Sequence[Result]) -> str:
    """One line per seed, for repeated runs."""
    head = f"{'seed':>6} {'size':>5} {'groups':>6} {'max-groups':>10} {'converge':>9} {'overlap':>7} {'violations':>10}  digest"
    lines = [head]
    for r in results:
        m = r.metrics
        conv = "-" if m["convergence_time"] is None else f"{m['convergence_time']:.2f}s"
        lines.append(
            f"{r.seed:>6} {m['final_size']:>5} {m['final_groups']:>6} {m['max_groups_after_last_change']:>10} "
            f"{conv:>9} {m['leader_overlap']['samples']:>7} {r.violations:>10}  {r.digest}"
        )
    split = sum(1 for r in results if r.metrics["final_groups"] > 1)
    lines.append(f"{split} of {len(results)} runs ended split into more than one group")
    return "\n".join(lines)


def to_json(results: Sequence[Result], series: bool = False) -> str:
    data: Any = [r.to_json(series) for r in results]
    return json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str)


def plot(result: Result, path: str) -> None:
    """Cluster size, groups, agreement and leader token over virtual time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HedgeplugError("--plot needs matplotlib: pip install 'hedgeplug[plot]'") from None
    series = result.series
    if not series:
        raise HedgeplugError("the run recorded no samples to plot")
    t = [p["t"] for p in series]
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(10, 8))
    panels = [
        ("size", "live nodes", "tab:blue"),
        ("groups", "groups", "tab:red"),
        ("agreement", "views = live set", "tab:green"),
        ("token", "leader token", "tab:purple"),
    ]
    for ax, (key, label, color) in zip(axes, panels, strict=True):
        ax.step(t, [p[key] for p in series], where="post", color=color, linewidth=1)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[2].set_ylim(-0.05, 1.05)
    axes[-1].set_xlabel("virtual seconds")
    fig.suptitle(
        f"{result.scenario} ({result.membership}, seed {result.seed}) digest {result.digest[:12]}"
    )
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise HedgeplugError(f"cannot write plot {path}: {exc}") from None
    finally:
        plt.close(fig)
