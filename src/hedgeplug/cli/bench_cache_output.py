"""How `hedgeplug bench cache` shows its figures without --json: per value
size, one table of get/set latency and rate (one node, then every node at
once), one of batched reads, one of memory per entry; then the targets."""

from __future__ import annotations

from typing import Any

from .common import table


def _size_name(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return str(value)


def format_cache_figures(figures: dict[str, Any]) -> str:
    nodes = figures.get("nodes")
    out = [
        f"hedgeplug bench cache: {nodes} node processes ({figures.get('transport')}, R={figures.get('replicas')}) "
        f"beside {', '.join(figures.get('baselines', {}).values()) or 'no baseline'}; "
        f"load average {figures.get('load_average')}"
    ]
    for kind, why in figures.get("missing", {}).items():
        out.append(f"not measured: {kind}: {why}")
    for size_text, block in figures.get("sizes", {}).items():
        size = int(size_text)
        one, every = block["one_node"], block["all_nodes"]
        rows = []
        for path in one:
            a, b = one[path], every.get(path, {})
            rows.append([path, _n(a["p50_us"]), _n(a["p99_us"]), _n(a["ops_per_s"]),
                         _n(b.get("p50_us")), _n(b.get("p99_us")), _n(b.get("ops_per_s"))])
        out += ["", f"values of {_size_name(size)} ({block['keys']} keys); microseconds, calls per second",
                table(rows, ["PATH", "P50", "P99", "OPS/S", f"P50 x{nodes}", f"P99 x{nodes}", f"OPS/S x{nodes}"])]
        batch_rows = [[path, _n(r["one_node"]), _n(r["per_node_all_at_once"])]
                      for path, r in block["batched_keys_per_s"].items()]
        out += ["", table(batch_rows, ["BATCHED READ", "KEYS/S ONE NODE", f"KEYS/S PER NODE x{nodes}"])]
        memory_rows = [[kind, _size_name(size), _n(m["overhead_bytes_per_entry"]), str(m["key_bytes"])]
                       for kind, m in block["memory"].items()]
        out += ["", table(memory_rows, ["MEMORY", "VALUE", "OVERHEAD B/ENTRY", "KEY B"])]
        cpu = block.get("cpu_us_per_call")
        if cpu:
            out += ["", table([[path, _n(v)] for path, v in cpu.items()],
                              ["EACH PATH ALONE", "CPU US PER CALL (ALL PROCESSES)"])]
    targets = figures.get("targets") or {}
    if targets:
        rows = [[name, _n(t["value"]), str(t["target"]), "yes" if t["met"] else "NO"]
                for name, t in targets.items() if isinstance(t, dict)]
        out += ["", f"targets (values of {_size_name(int(targets.get('value_size', 0)))}, one node)",
                table(rows, ["TARGET", "MEASURED", "TARGET", "MET"])]
        floor = targets.get("remote_get_over_floor_p50")
        if floor is not None:
            out.append(f"hedgeplug get p50 over the trio tcp echo floor between two of these processes: {floor:g}x")
    return "\n".join(out)
