"""The counters a cache keeps, shown by `status --json` and `hedgeplug cache stats`."""

from __future__ import annotations

from typing import Any

NAMES = (
    "hits",
    "misses",
    "sets",
    "deletes",
    "evictions",
    "expirations",
    "redirects",
    "stale_refused",  # writes this node refused as an owner because it held a newer version
    "stale_hidden",  # reads answered as a miss because this reader had seen a newer version
    "fallback_reads",  # hits found on an owner of the previous view during a hand-off
    "handoff_keys_out",
    "handoff_bytes_out",
    "handoff_keys_in",
    "handoff_bytes_in",
    "pulled_before_write",  # copies a new owner took from a previous owner before a write
    "dropped_not_owner",
    "repaired_out",  # entries sent to a co-owner that lacked them or held older ones  # keys let go after the view moved them elsewhere
    "loads",  # loader runs this node did for get_or_load
    "load_waits",  # get_or_load calls that waited for another caller's load
    "write_errors",
    "protocol_errors",
)


class Counters:
    def __init__(self) -> None:
        self.values: dict[str, int] = dict.fromkeys(NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n

    def __getitem__(self, name: str) -> int:
        return self.values.get(name, 0)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        hits, misses = self["hits"], self["misses"]
        out: dict[str, Any] = dict(self.values)
        out["hit_rate"] = round(hits / (hits + misses), 4) if hits + misses else None
        out.update(extra)
        return out
