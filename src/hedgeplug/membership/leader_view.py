"""The heartbeat leader's view while it holds one token: the members, when
each last beat, and a bounded log of recent changes so a lagging member can
be answered with a delta instead of the whole view."""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from hedgeplug.plugin import Member, View, ViewVersion

DELTA_LOG = 1024  # changes the leader keeps to answer a lagging member with a delta


@attrs.frozen
class Change:
    seq: int
    joined: tuple[Member, ...]
    left: tuple[str, ...]
    wire: list[Any]  # [seq, joined, left] as sent, made once


class LeaderState:
    """What the leader knows while it holds one token."""

    def __init__(self, token: int, members: dict[str, Member], now: float) -> None:
        self.token = token
        self.seq = 1
        self.members = members
        self.last_seen = {mid: now for mid in members}
        # Members as sent, made once each: every joiner gets the whole view.
        self.wire = {mid: m.to_wire() for mid, m in members.items()}
        self.changes: deque[Change] = deque(maxlen=DELTA_LOG)

    @property
    def version(self) -> ViewVersion:
        return ViewVersion(self.token, self.seq)

    def view(self) -> View:
        return View(tuple(self.members.values()), self.version)

    def apply(self, joined: list[Member], left: list[str]) -> Change | None:
        joined = [m for m in joined if self.members.get(m.id) != m]
        left = [mid for mid in left if mid in self.members]
        if not joined and not left:
            return None
        joined_wire = [m.to_wire() for m in joined]
        for m, wire in zip(joined, joined_wire, strict=True):
            self.members[m.id], self.wire[m.id] = m, wire
        for mid in left:
            del self.members[mid], self.wire[mid]
            self.last_seen.pop(mid, None)
        self.seq += 1
        change = Change(self.seq, tuple(joined), tuple(left), [self.seq, joined_wire, list(left)])
        self.changes.append(change)
        return change

    def changes_since(self, version: ViewVersion) -> list[Change] | None:
        """The changes after `version`, or None when a full view is needed."""
        if version.token != self.token or version.seq > self.seq:
            return None
        if version.seq == self.seq:
            return []
        wanted = [c for c in self.changes if c.seq > version.seq]
        if not wanted or wanted[0].seq != version.seq + 1:
            return None
        return wanted
