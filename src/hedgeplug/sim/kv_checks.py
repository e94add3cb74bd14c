"""Checkers of the key/value log (scenario kv-faults), run when the run ends.

The scenario records every put and get in a `KvHistory`; the store keeps
every append it accepted and every lease it granted. The checkers:

- `AckedWritesKept`: every acknowledged put is in the store's log, under its
  key, with the value, version and revision its acknowledgement named.
- `NoStaleAppends`: every accepted append carried the newest token the store
  had granted for the lock at that instant; so, in revision order, tokens
  never go down, and nothing a deposed leader sent after its successor was
  granted the lease was accepted.
- `ReadsNeverGoBack`: per reader and key, revisions read never decrease, and
  a reader sees at least its own acknowledged writes.
- `KeyLinearizable`: per key, a put acknowledged before another began has a
  lower revision, and every read returns an entry the store accepted, not
  older than any put acknowledged before the read began. (Writes are
  serialized by the store, so the revisions give the order to check against.)
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from hedgeplug.contracts import LogEntry
from hedgeplug.lock.memory import MemoryStore

from .checks import Checker, Report


@attrs.frozen
class PutOp:
    client: str  # the node the put was made through
    key: str
    value: bytes
    invoked: float
    acked: float | None  # None: failed or timed out (outcome unknown)
    entry: LogEntry | None


@attrs.frozen
class GetOp:
    reader: str
    key: str
    invoked: float
    returned: float
    entry: LogEntry | None


@attrs.define
class KvHistory:
    puts: list[PutOp] = attrs.Factory(list)
    gets: list[GetOp] = attrs.Factory(list)

    def acked(self) -> list[PutOp]:
        return [p for p in self.puts if p.entry is not None]


def _accepted(store: MemoryStore, lock: str) -> list[LogEntry]:
    return [a.entry for a in store.log.accepted if a.lock == lock]


class AckedWritesKept(Checker):
    name = "kv-acked-writes-kept"

    def __init__(self, history: KvHistory, store: Callable[[], MemoryStore], lock: str) -> None:
        self.history, self.store, self.lock = history, store, lock

    def finish(self, t: float, report: Report) -> None:
        store = self.store()
        for op in self.history.acked():
            assert op.entry is not None
            kept = store.log.read(self.lock, op.key, None, True)
            if op.entry not in kept or op.entry.value != op.value:
                report(self.name, f"acknowledged put {op.key}={op.value!r} (revision "
                                  f"{op.entry.revision}) is not in the store's log")
                return


class NoStaleAppends(Checker):
    name = "kv-no-stale-appends"

    def __init__(self, store: Callable[[], MemoryStore], lock: str) -> None:
        self.store, self.lock = store, lock

    def finish(self, t: float, report: Report) -> None:
        store = self.store()
        grants = sorted((g for g in store.grants if g.lock == self.lock), key=lambda g: g.at)
        newest = 0
        i = 0
        for entry in sorted(_accepted(store, self.lock), key=lambda e: e.revision):
            while i < len(grants) and grants[i].at <= entry.committed_at:
                newest = max(newest, grants[i].token)
                i += 1
            if entry.token != newest:
                report(self.name, f"append of {entry.key!r} (revision {entry.revision}) accepted "
                                  f"with token {entry.token} while the newest granted was {newest}")
                return


class ReadsNeverGoBack(Checker):
    name = "kv-reads-never-go-back"

    def __init__(self, history: KvHistory) -> None:
        self.history = history

    def finish(self, t: float, report: Report) -> None:
        floor: dict[tuple[str, str], int] = {}
        events: list[tuple[float, int, str, str, int, str]] = []
        for p in self.history.acked():
            assert p.entry is not None and p.acked is not None
            events.append((p.acked, 0, p.client, p.key, p.entry.revision, "put"))
        for g in self.history.gets:
            events.append((g.returned, 1, g.reader, g.key, g.entry.revision if g.entry else 0, "get"))
        for _at, _kind, who, key, revision, what in sorted(events):
            seen = floor.get((who, key), 0)
            if what == "get" and revision < seen:
                report(self.name, f"{who} read {key!r} at revision {revision} after it had "
                                  f"seen revision {seen}")
                return
            floor[(who, key)] = max(seen, revision)


class KeyLinearizable(Checker):
    name = "kv-key-linearizable"

    def __init__(self, history: KvHistory, store: Callable[[], MemoryStore], lock: str) -> None:
        self.history, self.store, self.lock = history, store, lock

    def finish(self, t: float, report: Report) -> None:
        accepted = {(e.key, e.revision): e for e in _accepted(self.store(), self.lock)}
        by_key: dict[str, list[PutOp]] = {}
        for op in self.history.acked():
            by_key.setdefault(op.key, []).append(op)
        for key, ops in sorted(by_key.items()):
            ops.sort(key=lambda o: o.invoked)
            # Real-time order: a put acknowledged before another was invoked precedes it.
            latest_acked: list[tuple[float, int]] = sorted(
                (o.acked, o.entry.revision) for o in ops if o.acked is not None and o.entry
            )
            best, j = 0, 0
            for op in ops:
                assert op.entry is not None
                while j < len(latest_acked) and latest_acked[j][0] < op.invoked:
                    best = max(best, latest_acked[j][1])
                    j += 1
                if op.entry.revision <= best:
                    report(self.name, f"put {key}={op.value!r} got revision {op.entry.revision}, "
                                      f"not after revision {best} acknowledged before it began")
                    return
        for get in self.history.gets:
            if get.entry is not None and accepted.get((get.key, get.entry.revision)) != get.entry:
                report(self.name, f"{get.reader} read {get.key!r} revision {get.entry.revision}, "
                                  "which the store never accepted")
                return
            done = [o.entry.revision for o in by_key.get(get.key, [])
                    if o.acked is not None and o.acked < get.invoked and o.entry is not None]
            revision = get.entry.revision if get.entry else 0
            if done and revision < max(done):
                report(self.name, f"{get.reader} read {get.key!r} at revision {revision}, older "
                                  f"than revision {max(done)} acknowledged before the read began")
                return


def kv_checkers(history: KvHistory, store: Callable[[], MemoryStore], lock: str) -> list[Checker]:
    return [
        AckedWritesKept(history, store, lock),
        NoStaleAppends(store, lock),
        ReadsNeverGoBack(history),
        KeyLinearizable(history, store, lock),
    ]
