"""Members and views: the value types every membership strategy publishes."""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

import attrs

# Incarnations real members use are small counters; the bound leaves room to
# add to one without leaving msgpack's 64-bit integers.
WIRE_INT_BOUND = 2**62


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
        """The application's metadata: `meta` without the node's own "hp." keys
        (the protocol versions it speaks, hedgeplug.versions)."""
        return {k: v for k, v in self.meta if not k.startswith("hp.")}

    @property
    def live(self) -> bool:
        return self.state in (MemberState.ALIVE, MemberState.SUSPECT)

    def to_wire(self) -> list[Any]:
        return [self.id, self.address, dict(self.meta), self.state.value, self.incarnation]

    @classmethod
    def from_wire(cls, data: Any) -> Member:
        mid, address, meta, state, inc = data
        key = _intern_key(mid, address, meta, state, inc) if cls is Member else None
        if key is not None:
            found = _MEMBERS.get(key)
            if found is not None:
                return found
        if not isinstance(mid, str) or not isinstance(address, str):
            raise ValueError("member id and address must be strings")
        incarnation = int(inc)
        if not -WIRE_INT_BOUND < incarnation < WIRE_INT_BOUND:
            # A peer's absurd counter: kept, it would be bumped or echoed past
            # what the wire codec can encode and break every later reply.
            raise ValueError(f"member incarnation {incarnation} out of range")
        member = cls(str(mid), str(address), dict(meta or {}), MemberState(state), incarnation)
        if key is not None:
            if len(_MEMBERS) >= INTERNED_MEMBERS:
                _MEMBERS.clear()
            _MEMBERS[key] = member
        return member

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "meta": dict(self.meta),
            "state": self.state.value,
            "incarnation": self.incarnation,
        }


# Members decoded from the wire, shared: every node of a process (the
# simulator runs thousands) that decodes the same member gets the same
# immutable object instead of a copy of its own. Bounded; clearing it only
# costs sharing.
INTERNED_MEMBERS = 1 << 16
_MEMBERS: dict[tuple[Any, ...], Member] = {}


def _intern_key(mid: Any, address: Any, meta: Any, state: Any, inc: Any) -> tuple[Any, ...] | None:
    """The interning key of a wire member, or None when it has no plain one."""
    if type(mid) is not str or type(address) is not str or type(state) is not str or type(inc) is not int:
        return None
    if not meta:
        return (mid, address, state, inc)
    if type(meta) is not dict or not all(type(k) is str and type(v) is str for k, v in meta.items()):
        return None
    return (mid, address, state, inc, *sorted(meta.items()))


_ID = attrgetter("id")
_STATE = attrgetter("state")
_LIVE_STATES = frozenset((MemberState.ALIVE, MemberState.SUSPECT))


def _sorted_members(members: Iterable[Member]) -> tuple[Member, ...]:
    return tuple(sorted(members, key=_ID))


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

    members: tuple[Member, ...] = attrs.field(default=(), converter=_sorted_members)
    version: ViewVersion = ViewVersion()

    @classmethod
    def of(cls, members: Iterable[Member], token: int = 0, seq: int = 0) -> View:
        return cls(tuple(members), ViewVersion(token, seq))

    # Cached: views are immutable and read on every change by every node, so
    # recomputing these made large clusters cost O(n^3) in the simulator.
    @functools.cached_property
    def live(self) -> tuple[Member, ...]:
        if _LIVE_STATES.issuperset(map(_STATE, self.members)):
            return self.members  # the common case, checked without a Python-level loop
        return tuple(m for m in self.members if m.live)

    @functools.cached_property
    def ids(self) -> frozenset[str]:
        """Ids of the live members (alive or suspect)."""
        return frozenset(map(_ID, self.live))

    @functools.cached_property
    def _live_by_id(self) -> dict[str, Member] | None:
        """Live members by id; None when two share an id (then diff scans)."""
        live = self.live
        by_id = dict(zip(map(_ID, live), live, strict=True))
        return by_id if len(by_id) == len(live) else None

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
        if newer is self:
            return (), ()
        old, new = self.ids, newer.ids
        hop = _HOPS.get((id(self), id(newer)))
        if hop is not None and hop[0] is self and hop[1] is newer:
            # newer came from View.changed on self: only the ids it touched can differ.
            touched = hop[2]
            return newer._live_among(frozenset(i for i in touched if i in new and i not in old)), self._live_among(
                frozenset(i for i in touched if i in old and i not in new)
            )
        # Set differences run in C; only the (usually few) changed members are
        # visited, so a node following a large cluster pays per change, not per member.
        return newer._live_among(new - old), self._live_among(old - new)

    def _live_among(self, ids: frozenset[str]) -> tuple[Member, ...]:
        """The live members with these ids, in view order."""
        if not ids:
            return ()
        by_id = self._live_by_id
        if by_id is None:
            return tuple(m for m in self.live if m.id in ids)
        return tuple(by_id[i] for i in sorted(ids))

    def changed(self, changes: Sequence[tuple[Sequence[Member], Sequence[Any]]], version: ViewVersion) -> View:
        """This view after `changes` ((joined members, left ids) pairs, applied
        in order), stamped `version`.

        Nodes of one process applying the same changes to the same view get
        the same View object back, and a result equal to a view already made
        at that version is replaced by it: a simulator running thousands of
        nodes keeps one copy of each view and computes it once, not once
        per node. Only identity is shared; contents are exactly as computed.
        """
        steps = tuple((tuple(joined), tuple(left)) for joined, left in changes)
        key = (id(self), version.token, version.seq, tuple((tuple(map(_ID, j)), left) for j, left in steps))
        hit = _DERIVED.get(key)
        if hit is not None and hit[0] is self and hit[1] == steps:
            _remember(_DERIVED, key, hit, DERIVED_VIEWS)  # in use: keep it
            return hit[2]
        members = dict(zip(map(_ID, self.members), self.members, strict=True))
        touched: set[Any] = set()
        for joined, left in steps:
            for m in joined:
                members[m.id] = m
                touched.add(m.id)
            for mid in left:
                members.pop(mid, None)
                touched.add(mid)
        result = View(tuple(members.values()), version).shared()
        _remember(_DERIVED, key, (self, steps, result), DERIVED_VIEWS)
        _remember(_HOPS, (id(self), id(result)), (self, result, frozenset(touched)), DERIVED_VIEWS)
        return result

    def shared(self) -> View:
        """An equal view (same version and members) already made in this
        process, else this one, remembered for the next caller."""
        key = (self.version.token, self.version.seq, len(self.members))
        known = _VIEWS.get(key)
        if known is not None and known.members == self.members:
            _remember(_VIEWS, key, known, SHARED_VIEWS)  # in use: keep it
            return known
        _remember(_VIEWS, key, self, SHARED_VIEWS)
        return self

    def updated(self, newer: View) -> tuple[tuple[Member, Member], ...]:
        """(member, previous) for each member live in both views whose
        metadata or address changed going from self to newer."""
        if newer.members is self.members:
            return ()
        before = self._live_by_id or {m.id: m for m in self.live}
        candidates = newer.live
        hop = _HOPS.get((id(self), id(newer)))
        if hop is not None and hop[0] is self and hop[1] is newer:
            # newer came from View.changed on self: only the ids it touched can differ.
            candidates = newer._live_among(frozenset(i for i in hop[2] if i in before))
        out = []
        for m in candidates:
            old = before.get(m.id)
            if old is not None and (old.meta != m.meta or old.address != m.address):
                out.append((m, old))
        return tuple(out)


# Bounded memories for View.changed and View.shared, least recently used
# dropped first: small, since only the views nodes are moving between now
# are worth keeping (a real node keeps a few old views, no more).
DERIVED_VIEWS = 16
SHARED_VIEWS = 16
_DERIVED: dict[tuple[Any, ...], tuple[View, tuple[Any, ...], View]] = {}
_VIEWS: dict[tuple[int, int, int], View] = {}
_HOPS: dict[tuple[int, int], tuple[View, View, frozenset[Any]]] = {}  # (base, result, ids touched)


def _remember(memory: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > limit:
        del memory[next(iter(memory))]
