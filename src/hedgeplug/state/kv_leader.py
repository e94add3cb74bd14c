"""The leader's side of the key/value log: it appends what any node sends it,
carrying the token of the lease it holds at that instant.

The leader does not trust its own belief: the store refuses the append in
the same transaction when a newer lease exists, so a leader that wakes from
a pause past its lease writes nothing (the requester then retries through
the new leader). Errors a requester should retry name themselves with one of
the RETRY_MARKS; anything else (a bad key) is final.

Watchers wait for appends here too: ``{"op": "wait", "after": revision,
"timeout": seconds}`` is answered as soon as this leader appended an entry
above `after` (at once if it already did), or after `timeout` with the
newest revision it appended (kv_watch.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from ..contracts import FencedLog, LogEntry
from ..election import Election
from ..errors import HedgeplugError, StoreError
from .kv_limits import check_keep, check_key, check_value

KV_CHANNEL = "kv.leader"
NOT_LEADER = "not the leader"
STORE_TROUBLE = "log store unavailable"
RETRY_MARKS = (NOT_LEADER, STORE_TROUBLE)
WAIT_AT_MOST = 60.0  # seconds one wait request may be held open


def entry_to_wire(entry: LogEntry) -> dict[str, Any]:
    return entry.to_json()


def entry_from_wire(data: Any) -> LogEntry:
    if not isinstance(data, dict):
        raise HedgeplugError(f"malformed log entry in a reply: {data!r:.100}")
    try:
        return LogEntry(
            key=str(data["key"]), value=bytes(data["value"]), version=int(data["version"]),
            revision=int(data["revision"]), token=int(data["token"]),
            committed_at=float(data["committed_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HedgeplugError(f"malformed log entry in a reply: {exc}") from None


class LogLeader:
    """Answers the kv.leader channel on every node; only the leader accepts."""

    def __init__(
        self, lock: Any, election: Election, count: Callable[[str], None], max_value: int
    ) -> None:
        self.lock = lock
        self.election = election
        self.count = count
        self.max_value = max_value
        self.fenced = isinstance(lock, FencedLog)  # once: the protocol check is slow
        self.revision = 0  # the newest revision this node appended as leader
        self._appended: anyio.Event | None = None  # made on first wait (needs the event loop)

    async def wait_for(self, after: int, timeout: float) -> int:
        """Once this node appended an entry above `after` (or `timeout` passed):
        the newest revision it appended."""
        if self.revision <= after:
            if self._appended is None:
                self._appended = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._appended.wait()
        return self.revision

    async def _wait_request(self, request: dict[str, Any]) -> int:
        after, timeout = request.get("after"), request.get("timeout")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise HedgeplugError("a kv wait needs `after`, a revision (whole number >= 0)")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 <= timeout <= WAIT_AT_MOST:
            raise HedgeplugError(f"a kv wait needs `timeout`, seconds in [0, {WAIT_AT_MOST:g}]")
        if self.election.lease is None:
            raise HedgeplugError(NOT_LEADER)
        return await self.wait_for(after, float(timeout))

    async def on_request(self, msg: Any) -> Any:
        request = msg.payload
        if isinstance(request, dict) and request.get("op") == "ping":
            return "pong"  # one round trip without the store (benchmarks measure it)
        if isinstance(request, dict) and request.get("op") == "wait":
            return await self._wait_request(request)
        if not isinstance(request, dict) or request.get("op") not in ("append", "trim"):
            raise HedgeplugError("malformed key/value log request")
        if not self.fenced:
            raise HedgeplugError("this cluster's lock store offers no key/value log")
        key = check_key(request.get("key"))
        lease = self.election.lease  # the lease held right now, or None
        if lease is None:
            raise HedgeplugError(NOT_LEADER)
        try:
            if request["op"] == "trim":
                dropped = await self.lock.log_trim(lease.token, key, check_keep(request.get("keep")))
                if dropped is None:
                    raise self._fenced(lease.token)
                self.count("kv-trims")
                return {"dropped": dropped}
            value = check_value(request.get("value"), self.max_value)
            entry = await self.lock.log_append(lease.token, key, value)
        except StoreError as exc:
            self.count("kv-store-errors")
            raise HedgeplugError(f"{STORE_TROUBLE}: {exc}") from None
        if entry is None:
            raise self._fenced(lease.token)
        self.count("kv-appends")
        self._announce(entry.revision)
        return entry_to_wire(entry)

    def _announce(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self._appended is not None:
            self._appended.set()
            self._appended = None

    def _fenced(self, token: int) -> HedgeplugError:
        self.count("kv-fenced")
        self.election.poke()  # our lease is gone: learn who leads now
        return HedgeplugError(f"{NOT_LEADER}: the store refused token {token} (a newer lease exists)")
