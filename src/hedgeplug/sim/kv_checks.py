"""Checkers of the key/value log (scenario kv-faults), run when the run ends.

The scenario records every put and get in a `KvHistory`; the store keeps
every append it accepted and every lease it granted. The checkers:

(the checker names; each runs one of the functions below)

- kv-acked-writes-kept: every acknowledged put is in the store's log, under its
  key, with the value, version and revision its acknowledgement named.
- kv-no-stale-appends: every accepted append carried the newest token the store
  had granted for the lock at that instant; so, in revision order, tokens
  never go down, and nothing a deposed leader sent after its successor was
  granted the lease was accepted.
- kv-reads-never-go-back: per reader and key, a read returns at least the newest
  revision that reader had read or written before the read began.
- kv-key-linearizable: per key, a put acknowledged before another began has a
  lower revision, and every read returns an entry the store accepted, not
  older than any put acknowledged before the read began. (Writes are
  serialized by the store, so the revisions give the order to check against.)
"""

from __future__ import annotations

import bisect
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


# ---------------------------------------------------------------- the checks, as functions
# (the real-process test runs them on a history recorded against a real store)


def lost_write(history: KvHistory, stored: list[LogEntry]) -> str | None:
    """An acknowledged put missing from `stored` (the store's entries), if any."""
    kept = set(stored)
    for op in history.acked():
        assert op.entry is not None
        if op.entry not in kept or op.entry.value != op.value:
            return (f"acknowledged put {op.key}={op.value!r} (revision {op.entry.revision}) "
                    "is not in the store's log")
    return None


def stale_append(accepted: list[LogEntry], grants: list[tuple[float, int]]) -> str | None:
    """An accepted entry whose token was not the newest granted ((at, token), store clock)."""
    grants = sorted(grants)
    newest, i = 0, 0
    for entry in sorted(accepted, key=lambda e: e.revision):
        while i < len(grants) and grants[i][0] <= entry.committed_at:
            newest = max(newest, grants[i][1])
            i += 1
        if entry.token != newest:
            return (f"append of {entry.key!r} (revision {entry.revision}) accepted with token "
                    f"{entry.token} while the newest granted was {newest}")
    return None


def tokens_go_back(accepted: list[LogEntry]) -> str | None:
    """In revision order, a token lower than one before it (a deposed leader's write
    accepted after its successor's), if any."""
    highest = 0
    for entry in sorted(accepted, key=lambda e: e.revision):
        if entry.token < highest:
            return (f"revision {entry.revision} ({entry.key!r}) carries token {entry.token} "
                    f"after token {highest} had written")
        highest = entry.token
    return None


def read_went_back(history: KvHistory) -> str | None:
    """Per reader and key: a read older than what that reader had seen or written
    before the read began (operations that overlap it may go either way)."""
    done: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for p in history.acked():
        assert p.entry is not None and p.acked is not None
        done.setdefault((p.client, p.key), []).append((p.acked, p.entry.revision))
    for g in history.gets:
        if g.entry is not None:
            done.setdefault((g.reader, g.key), []).append((g.returned, g.entry.revision))
    floors: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
    for who_key, items in done.items():
        items.sort()
        highest, running = 0, []
        for _at, revision in items:
            highest = max(highest, revision)
            running.append(highest)
        floors[who_key] = ([at for at, _ in items], running)
    for g in history.gets:
        times, running = floors.get((g.reader, g.key), ([], []))
        before = bisect.bisect_left(times, g.invoked)
        seen = running[before - 1] if before else 0
        revision = g.entry.revision if g.entry else 0
        if revision < seen:
            return (f"{g.reader} read {g.key!r} at revision {revision} after it had seen "
                    f"revision {seen} before the read began")
    return None


def not_linearizable(history: KvHistory, accepted: list[LogEntry]) -> str | None:
    """Per key: puts in real-time order get increasing revisions; reads return an
    accepted entry not older than any put acknowledged before the read began."""
    known = {(e.key, e.revision): e for e in accepted}
    by_key: dict[str, list[PutOp]] = {}
    for op in history.acked():
        by_key.setdefault(op.key, []).append(op)
    for key, ops in sorted(by_key.items()):
        ops.sort(key=lambda o: o.invoked)
        done = sorted((o.acked, o.entry.revision) for o in ops if o.acked is not None and o.entry)
        best, j = 0, 0
        for op in ops:
            assert op.entry is not None
            while j < len(done) and done[j][0] < op.invoked:
                best = max(best, done[j][1])
                j += 1
            if op.entry.revision <= best:
                return (f"put {key}={op.value!r} got revision {op.entry.revision}, not after "
                        f"revision {best} acknowledged before it began")
    for get in history.gets:
        if get.entry is not None and known.get((get.key, get.entry.revision)) != get.entry:
            return f"{get.reader} read {get.key!r} revision {get.entry.revision}, which the store never accepted"
        before = [o.entry.revision for o in by_key.get(get.key, [])
                  if o.acked is not None and o.acked < get.invoked and o.entry is not None]
        revision = get.entry.revision if get.entry else 0
        if before and revision < max(before):
            return (f"{get.reader} read {get.key!r} at revision {revision}, older than revision "
                    f"{max(before)} acknowledged before the read began")
    return None


# ---------------------------------------------------------------- the simulator's checkers


class _FinishCheck(Checker):
    def __init__(self, name: str, check: Callable[[], str | None]) -> None:
        self.name = name
        self._check = check

    def finish(self, t: float, report: Report) -> None:
        found = self._check()
        if found is not None:
            report(self.name, found)


def kv_checkers(history: KvHistory, store: Callable[[], MemoryStore], lock: str) -> list[Checker]:
    def grants() -> list[tuple[float, int]]:
        return [(g.at, g.token) for g in store().grants if g.lock == lock]

    def stored() -> list[LogEntry]:
        book = store().log
        return [e for k in book.keys(lock, "") for e in book.read(lock, k, None, True)]

    return [
        _FinishCheck("kv-acked-writes-kept", lambda: lost_write(history, stored())),
        _FinishCheck("kv-no-stale-appends", lambda: stale_append(_accepted(store(), lock), grants())
                     or tokens_go_back(_accepted(store(), lock))),
        _FinishCheck("kv-reads-never-go-back", lambda: read_went_back(history)),
        _FinishCheck("kv-key-linearizable",
                     lambda: not_linearizable(history, _accepted(store(), lock))),
    ]
