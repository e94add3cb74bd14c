"""FencedLog for EtcdLock.

Key layout under the lock's base (``<prefix><lock name>/``):

- ``log/<key>\\0<version, 20 digits>``: one entry, JSON ``{"value": base64,
  "token", "at"}``; the zero-padded version makes key order version order.
- ``loghead/<key>``: the newest version of `key` (so keys() lists heads, not
  every entry).

An append is ONE etcd transaction whose compares are: the lock key's
mod_revision equals the token (the lock key is rewritten by every
acquisition and deleted with its lease, so a deposed or expired holder's
token no longer matches), and the new entry key does not exist yet (two
appenders racing for the same version: one wins, the other reads the head
again). `revision` is the etcd revision of that transaction (store-wide,
strictly increasing). etcd keeps no wall clock, so ``committed_at`` is the
APPENDING LEADER's wall clock at the append, not the store's.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hedgeplug.plugin import LogEntry, StoreError

from .gateway import GatewayClient, b64, num, prefix_end, unb64

RACE_RETRIES = 32  # version races lost in a row before giving up (appenders are few)
_DIGITS = 20


def _writer_clock() -> float:
    return time.time()  # clock-ok: etcd has no wall clock; documented as the writer's


class EtcdLogMixin:
    """Mixed into EtcdLock, which provides `client`, `key` and `log_base`."""

    client: GatewayClient
    key: bytes
    log_base: bytes

    def _entry_prefix(self, key: str) -> bytes:
        return self.log_base + b"log/" + key.encode() + b"\0"

    def _entry_key(self, key: str, version: int) -> bytes:
        return self._entry_prefix(key) + str(version).zfill(_DIGITS).encode()

    def _head_key(self, key: str) -> bytes:
        return self.log_base + b"loghead/" + key.encode()

    def _entry(self, kv: dict[str, Any]) -> LogEntry:
        raw = unb64(kv.get("key"))[len(self.log_base) + len(b"log/"):]
        key, _, version = raw.rpartition(b"\0")
        try:
            body = json.loads(unb64(kv.get("value")))
            return LogEntry(key.decode(), unb64(body["value"]), int(version), num(kv, "mod_revision"),
                            int(body["token"]), float(body["at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"etcd log entry {raw[:100]!r} is not a hedgeplug log entry") from exc

    async def _head(self, key: str) -> int:
        answer = await self.client.call("kv/range", {"key": b64(self._head_key(key))})
        kvs = answer.get("kvs") or []
        return int(unb64(kvs[0].get("value")) or b"0") if kvs else 0

    def _fence(self, token: int) -> dict[str, Any]:
        return {"key": b64(self.key), "target": "MOD", "result": "EQUAL", "mod_revision": str(token)}

    async def _token_is_current(self, answer: dict[str, Any], token: int) -> bool:
        lock_kvs = (answer.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
        return bool(lock_kvs) and num(lock_kvs[0], "mod_revision") == token

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        for _ in range(RACE_RETRIES):
            version = await self._head(key) + 1
            at = _writer_clock()
            body = json.dumps({"value": b64(value), "token": token, "at": at}).encode()
            entry_key = self._entry_key(key, version)
            answer = await self.client.call("kv/txn", {
                "compare": [self._fence(token),
                            {"key": b64(entry_key), "target": "CREATE", "result": "EQUAL",
                             "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(entry_key), "value": b64(body)}},
                            {"request_put": {"key": b64(self._head_key(key)),
                                             "value": b64(str(version))}}],
                "failure": [{"request_range": {"key": b64(self.key)}}],
            })
            if answer.get("succeeded"):
                revision = num(answer.get("header", {}), "revision")
                return LogEntry(key, bytes(value), version, revision, token, at)
            if not await self._token_is_current(answer, token):
                return None
        raise StoreError(f"etcd {self.client.endpoint}: append to {key!r} lost the race for a "
                         f"version {RACE_RETRIES} times in a row")

    async def log_trim(self, token: int, key: str, keep: int) -> int | None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        newest = await self._head(key)
        success = []
        if newest - keep >= 1:
            success = [{"request_delete_range": {
                "key": b64(self._entry_prefix(key)),
                "range_end": b64(self._entry_key(key, newest - keep + 1)),
            }}]
        answer = await self.client.call("kv/txn", {"compare": [self._fence(token)], "success": success})
        if not answer.get("succeeded"):
            return None
        responses = answer.get("responses") or [{}]
        return num(responses[0].get("response_delete_range", {}), "deleted") if success else 0

    async def log_read(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        start = self._entry_prefix(key)
        request = {"key": b64(start), "range_end": b64(prefix_end(start)), "sort_target": "KEY",
                   "sort_order": "ASCEND" if oldest_first else "DESCEND"}
        if limit is not None:
            request["limit"] = str(limit)
        answer = await self.client.call("kv/range", request)
        return [self._entry(kv) for kv in answer.get("kvs") or []]

    async def log_keys(self, prefix: str) -> list[str]:
        heads = self.log_base + b"loghead/"
        start = heads + prefix.encode()
        answer = await self.client.call("kv/range", {"key": b64(start), "range_end": b64(prefix_end(start)),
                                                     "keys_only": True})
        return [unb64(kv.get("key"))[len(heads):].decode() for kv in answer.get("kvs") or []]

    async def log_since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        start = self.log_base + b"log/" + prefix.encode()
        answer = await self.client.call("kv/range", {
            "key": b64(start), "range_end": b64(prefix_end(start)), "min_mod_revision": str(revision + 1),
            "sort_target": "MOD", "sort_order": "ASCEND", "limit": str(limit),
        })
        return [self._entry(kv) for kv in answer.get("kvs") or []]

    async def log_last_revision(self) -> int:
        answer = await self.client.call("kv/range", {"key": b64(self.key), "count_only": True})
        return num(answer.get("header", {}), "revision")
