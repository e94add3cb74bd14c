"""The leader's side of the key/value log: it appends what any node sends it,
carrying the token of the lease it holds at that instant.

The leader does not trust its own belief: the store refuses the append in
the same transaction when a newer lease exists, so a leader that wakes from
a pause past its lease writes nothing (the requester then retries through
the new leader). Errors a requester should retry name themselves with one of
the RETRY_MARKS; anything else (a bad key) is final.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..contracts import FencedLog, LogEntry
from ..election import Election
from ..errors import HedgeplugError, StoreError
from .kv_limits import check_keep, check_key, check_value

KV_CHANNEL = "kv.leader"
NOT_LEADER = "not the leader"
STORE_TROUBLE = "log store unavailable"
RETRY_MARKS = (NOT_LEADER, STORE_TROUBLE)


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

    async def on_request(self, msg: Any) -> Any:
        request = msg.payload
        if isinstance(request, dict) and request.get("op") == "ping":
            return "pong"  # one round trip without the store (benchmarks measure it)
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
        return entry_to_wire(entry)

    def _fenced(self, token: int) -> HedgeplugError:
        self.count("kv-fenced")
        self.election.poke()  # our lease is gone: learn who leads now
        return HedgeplugError(f"{NOT_LEADER}: the store refused token {token} (a newer lease exists)")
