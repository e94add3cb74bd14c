"""FencedLog for EtcdLock.

Key layout under the lock's base (``<prefix><lock name>/``):

- ``log/<key>\\0<version, 20 digits>``: one entry, JSON ``{"value": base64,
  "token", "at"}``; the zero-padded version makes key order version order.
- ``loghead/<key>``: a copy of the newest entry of `key`, with its version,
  written in the same transaction (so keys() lists heads, not every entry,
  and a read of the latest value is one single-key range).

An append is ONE etcd transaction whose compares are: the lock key's
mod_revision equals the token (the lock key is rewritten by every
acquisition and deleted with its lease, so a deposed or expired holder's
token no longer matches), and the new entry key does not exist yet (two
appenders racing for the same version: one wins, the other reads the head
again; the appender remembers the newest version it wrote per key, so the
usual append is one round trip). `revision` is the etcd revision of that transaction (store-wide,
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
    _log_versions: dict[str, int] | None = None  # newest version appended here, per key

    def _known_versions(self) -> dict[str, int]:
        if self._log_versions is None:
            self._log_versions = {}
        return self._log_versions

    def _entry_prefix(self, key: str) -> bytes:
        return self.log_base + b"log/" + key.encode() + b"\0"

    def _entry_key(self, key: str, version: int) -> bytes:
        return self._entry_prefix(key) + str(version).zfill(_DIGITS).encode()

    def _head_key(self, key: str) -> bytes:
        return self.log_base + b"loghead/" + key.encode()

    def _entry(self, kv: dict[str, Any], key: str | None = None) -> LogEntry:
        """An entry from an entry key's kv, or from a head's (then `key` is given)."""
        raw = unb64(kv.get("key"))
        if key is None:
            key = raw[len(self.log_base) + len(b"log/"):].rpartition(b"\0")[0].decode()
        try:
            body = json.loads(unb64(kv.get("value")))
            return LogEntry(key, unb64(body["value"]), int(body["version"]), num(kv, "mod_revision"),
                            int(body["token"]), float(body["at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"etcd log entry {raw[:100]!r} is not a hedgeplug log entry") from exc

    def _head_version(self, kv: dict[str, Any] | None) -> int:
        if kv is None:
            return 0
        try:
            return int(json.loads(unb64(kv.get("value")))["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError("etcd log head is not a hedgeplug log head") from exc

    async def _head(self, key: str) -> int:
        answer = await self.client.call("kv/range", {"key": b64(self._head_key(key))})
        kvs = answer.get("kvs") or []
        return self._head_version(kvs[0] if kvs else None)

    def _fence(self, token: int) -> dict[str, Any]:
        return {"key": b64(self.key), "target": "MOD", "result": "EQUAL", "mod_revision": str(token)}

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        known = self._known_versions()
        version = known.get(key)
        if version is None:
            version = await self._head(key)
        head = b64(self._head_key(key))
        for _ in range(RACE_RETRIES):
            version += 1
            at = _writer_clock()
            body = b64(json.dumps({"value": b64(value), "token": token, "at": at,
                                   "version": version}).encode())
            entry_key = self._entry_key(key, version)
            answer = await self.client.call("kv/txn", {
                "compare": [self._fence(token),
                            {"key": b64(entry_key), "target": "CREATE", "result": "EQUAL",
                             "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(entry_key), "value": body}},
                            {"request_put": {"key": head, "value": body}}],
                "failure": [{"request_range": {"key": b64(self.key)}},
                            {"request_range": {"key": head}}],
            })
            if answer.get("succeeded"):
                known[key] = version
                return LogEntry(key, bytes(value), version, num(answer.get("header", {}), "revision"),
                                token, at)
            responses = answer.get("responses") or [{}, {}]
            lock_kvs = responses[0].get("response_range", {}).get("kvs") or []
            if not lock_kvs or num(lock_kvs[0], "mod_revision") != token:
                known.pop(key, None)
                return None
            head_kvs = (responses[1] if len(responses) > 1 else {}).get("response_range", {}).get("kvs")
            version = self._head_version(head_kvs[0] if head_kvs else None)  # another appender won
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
        if limit == 1 and not oldest_first:  # the latest: one key, the head
            answer = await self.client.call("kv/range", {"key": b64(self._head_key(key))})
            return [self._entry(kv, key) for kv in answer.get("kvs") or []]
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
