"""The cache's messages on its channel `cache:<name>`: lists whose first item
names the operation. Replies are lists too, first item the outcome.

    ["w", key, value|None, version, ttl|None, mode]  write (None value: delete)
        -> ["ok"] | ["stale", version] | ["redirect", [[id, address], ...]]
           | ["too-large", why]  (the entry exceeds the owner's max_memory)
    ["r", key]                                       read, answered by any holder
        -> ["hit", value, version, ttl|None] | ["tomb", version] | ["miss"]
    ["rm", [key, ...]]   batched read (get_many), at most 256 keys
        -> ["ok", [a read's answer, or ["skip"] past one frame's room, per key]]
    ["p", mode, [[key, value|None, version, ttl|None], ...]]   hand-off batch
        -> ["ok", taken, [indexes of the entries the receiver does not own]]
    ["l", key, wait]          ask the primary for the right to run a loader
        -> ["hit", ...] | ["lease", token] | ["wait"] | ["redirect", ...]
    ["lr", key, token]        a loader failed: release its lease
    ["h", [[key, version], ...]]   does the receiver hold these (at least this new)?
        -> ["ok", [indexes of those it lacks or holds older]]
    ["ae", [64 bucket digests]]   anti-entropy between co-owners
        -> ["ok", [[key, version], ...], [differing buckets], [entries]]
    ["stats"] | ["cget", key] | ["cset", key, value, ttl|None]   operator commands

Write modes: "client" (the owner checks it owns the key in its newest
view), "handoff" (the same check) and "leave" (the sender is leaving: the
receiver checks it owns the key in its view without the sender).
"""

from __future__ import annotations

from typing import Any

from .versions import Version, version_from_wire, version_to_wire

WRITE, READ, PUSH, LEASE, RELEASE, DIGEST, HAVE = "w", "r", "p", "l", "lr", "ae", "h"
READ_MANY = "rm"
STATS, ADMIN_GET, ADMIN_SET = "stats", "cget", "cset"
MODE_CLIENT, MODE_HANDOFF, MODE_LEAVE = "client", "handoff", "leave"
MODES = (MODE_CLIENT, MODE_HANDOFF, MODE_LEAVE)

WireEntry = tuple[bytes, bytes | None, Version, float | None]


def need_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} must be bytes")
    return value


def need_ttl(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError("ttl must be a non-negative number or nil")
    return float(value)


def entry_to_wire(key: bytes, value: bytes | None, version: Version, ttl: float | None) -> list[Any]:
    return [key, value, version_to_wire(version), ttl]


def entry_from_wire(data: Any) -> WireEntry:
    if not isinstance(data, list) or len(data) != 4:
        raise ValueError("an entry is [key, value, version, ttl]")
    key = need_bytes(data[0], "key")
    value = None if data[1] is None else need_bytes(data[1], "value")
    return key, value, version_from_wire(data[2]), need_ttl(data[3])


def entry_wire_size(key: bytes, value: bytes | None) -> int:
    return len(key) + (len(value) if value else 0) + 32


def owners_to_wire(owners: list[tuple[str, str]]) -> list[list[str]]:
    return [[member, address] for member, address in owners]


def owners_from_wire(data: Any) -> list[tuple[str, str]]:
    if not isinstance(data, list) or not all(
        isinstance(o, list) and len(o) == 2 and all(isinstance(x, str) for x in o) for o in data
    ):
        raise ValueError("owners must be [[id, address], ...]")
    return [(o[0], o[1]) for o in data]


def key_version_to_wire(key: bytes, version: Version) -> list[Any]:
    return [key, version_to_wire(version)]


def key_version_from_wire(data: Any) -> tuple[bytes, Version]:
    if not isinstance(data, list) or len(data) != 2:
        raise ValueError("a key version is [key, version]")
    return need_bytes(data[0], "key"), version_from_wire(data[1])
