"""Versions: a Lamport clock paired with the writer's node id.

A version is (counter, writer id), compared as a tuple, so any two writes
are ordered and two writers never produce the same version. Every cache
message that carries a version advances the receiver's clock past it, and an
owner that holds a newer version than a write refuses it ("stale"); the
writer then moves its clock past that version and writes again. So per key,
versions only grow, and a replica never replaces a newer value with an older
one whatever order messages arrive in: it takes a value only if its version
is strictly greater than the one it holds.
"""

from __future__ import annotations

from typing import Any

Version = tuple[int, str]
ZERO: Version = (0, "")


def version_to_wire(version: Version) -> list[Any]:
    return [version[0], version[1]]


def version_from_wire(data: Any) -> Version:
    if (
        not isinstance(data, list | tuple)
        or len(data) != 2
        or not isinstance(data[0], int)
        or isinstance(data[0], bool)
        or data[0] < 0
        or not isinstance(data[1], str)
    ):
        raise ValueError(f"malformed version {data!r}")
    return (int(data[0]), str(data[1]))


class LamportClock:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.counter = 0

    def tick(self) -> Version:
        self.counter += 1
        return (self.counter, self.node_id)

    def observe(self, version: Version) -> None:
        if version[0] > self.counter:
            self.counter = version[0]
