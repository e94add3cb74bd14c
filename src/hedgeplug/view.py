"""Members and views: the value types every membership strategy publishes."""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


def _frozen_meta(value: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if not value:
        return ()
    if isinstance(value, tuple):
        return value
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


@attrs.frozen(order=False)
class Member:
    """One node as others see it."""

    id: str
    address: str
    meta: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_frozen_meta)
    state: MemberState = MemberState.ALIVE
    incarnation: int = 0

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.meta)

    @property
    def live(self) -> bool:
        return self.state in (MemberState.ALIVE, MemberState.SUSPECT)

    def to_wire(self) -> list[Any]:
        return [self.id, self.address, dict(self.meta), self.state.value, self.incarnation]

    @classmethod
    def from_wire(cls, data: Any) -> Member:
        mid, address, meta, state, inc = data
        if not isinstance(mid, str) or not isinstance(address, str):
            raise ValueError("member id and address must be strings")
        return cls(str(mid), str(address), dict(meta or {}), MemberState(state), int(inc))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "meta": dict(self.meta),
            "state": self.state.value,
            "incarnation": self.incarnation,
        }


@attrs.frozen
class ViewVersion:
    """Who stamped a view and in which order.

    Under the heartbeat strategy `token` is the leader's fencing token and
    `seq` counts views within that leadership; tuples compare naturally.
    Gossip views have token 0 and a local counter.
    """

    token: int = 0
    seq: int = 0

    def as_tuple(self) -> tuple[int, int]:
        return (self.token, self.seq)

    def __lt__(self, other: ViewVersion) -> bool:
        return self.as_tuple() < other.as_tuple()

    def __le__(self, other: ViewVersion) -> bool:
        return self.as_tuple() <= other.as_tuple()

    def __str__(self) -> str:
        return f"{self.token}.{self.seq}"


@attrs.frozen
class View:
    """A node's versioned list of members, sorted by id."""

    members: tuple[Member, ...] = attrs.field(
        default=(), converter=lambda ms: tuple(sorted(ms, key=lambda m: m.id))
    )
    version: ViewVersion = ViewVersion()

    @classmethod
    def of(cls, members: Iterable[Member], token: int = 0, seq: int = 0) -> View:
        return cls(tuple(members), ViewVersion(token, seq))

    # Cached: views are immutable and read on every change by every node, so
    # recomputing these made large clusters cost O(n^3) in the simulator.
    @functools.cached_property
    def live(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.live)

    @functools.cached_property
    def ids(self) -> frozenset[str]:
        """Ids of the live members (alive or suspect)."""
        return frozenset(m.id for m in self.live)

    def get(self, member_id: str) -> Member | None:
        for m in self.members:
            if m.id == member_id:
                return m
        return None

    def __contains__(self, member_id: object) -> bool:
        return member_id in self.ids

    def __len__(self) -> int:
        return len(self.live)

    def digest(self) -> str:
        """Short hash of the live ids and addresses: equal digests, equal membership."""
        h = hashlib.blake2b(digest_size=8)
        for m in self.live:
            h.update(m.id.encode())
            h.update(b"\0")
            h.update(m.address.encode())
            h.update(b"\1")
        return h.hexdigest()

    def diff(self, newer: View) -> tuple[tuple[Member, ...], tuple[Member, ...]]:
        """(joined, left) live members going from self to newer."""
        old, new = self.ids, newer.ids
        joined = tuple(m for m in newer.live if m.id not in old)
        left = tuple(m for m in self.live if m.id not in new)
        return joined, left

    def updated(self, newer: View) -> tuple[tuple[Member, Member], ...]:
        """(member, previous) for each member live in both views whose
        metadata or address changed going from self to newer."""
        if newer.members is self.members:
            return ()
        before = {m.id: m for m in self.live}
        out = []
        for m in newer.live:
            old = before.get(m.id)
            if old is not None and (old.meta != m.meta or old.address != m.address):
                out.append((m, old))
        return tuple(out)
