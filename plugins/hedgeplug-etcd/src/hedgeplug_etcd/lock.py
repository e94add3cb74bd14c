"""The etcd lock backend: a key bound to an etcd lease, taken by a
create-if-absent transaction.

Key layout, under the configured prefix (default ``hedgeplug/``):

- ``<prefix><lock name>/lock``: JSON ``{"holder", "address", "ttl"}``, attached
  to the holder's etcd lease, so etcd deletes it when the lease runs out.
- ``<prefix><lock name>/fingerprint``: the key fingerprint of the newest
  holder (its primary key id), written with the lock key and by a renewal
  that carries another; not attached to any lease, so it outlives release and
  expiry for the next contender to check. Absent before fingerprints: "".
- ``<prefix><lock name>/rows/<key>``: the optional row storage.
- ``<prefix><lock name>/log/...`` and ``loghead/...``: the fenced log (log.py).

The fencing token is the lock key's ``mod_revision``: the key is written
only when a lease is acquired (renewals touch the etcd lease, never the key),
and etcd's revision counter only grows, so tokens strictly increase across
acquisitions. Expiry is decided by etcd's own lease clock, never by ours.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
from hedgeplug.plugin import Lease, Row, StoreError

from .gateway import GatewayClient, b64, num, prefix_end, unb64
from .log import EtcdLogMixin

# etcd refuses leases shorter than 1.5 election timeouts (2 s with the default
# 1 s election timeout) and silently grants its minimum instead; requested
# ttls are rounded up to whole seconds before that.
ETCD_DEFAULT_MIN_TTL = 2


def lease_seconds(ttl: float) -> int:
    """Whole seconds for an etcd lease: never shorter than asked."""
    return max(1, math.ceil(ttl - 1e-9))


class EtcdLock(EtcdLogMixin):
    """LockBackend + Watchable + Fingerprinted + RowStorage + FencedLog (log.py) for one
    lock name in etcd."""

    def __init__(self, client: GatewayClient, lock_name: str, prefix: str = "hedgeplug/") -> None:
        self.client = client
        self.lock_name = lock_name
        base = f"{prefix}{lock_name}/".encode()
        self.key = base + b"lock"
        self.fingerprint_key = base + b"fingerprint"
        self.rows_prefix = base + b"rows/"
        self.log_base = base

    # ------------------------------------------------------------ plumbing

    def _describe(self) -> str:
        return f"etcd key {self.key.decode(errors='replace')!r}"

    async def _range_lock(self) -> tuple[dict[str, Any] | None, str]:
        """The lock key's kv (None when absent) and the stored fingerprint, in one read."""
        answer = await self.client.call("kv/txn", {
            "success": [{"request_range": {"key": b64(self.key)}},
                        {"request_range": {"key": b64(self.fingerprint_key)}}],
        })
        responses = answer.get("responses") or [{}, {}]
        lock = responses[0].get("response_range", {}).get("kvs") or []
        stamp = responses[1].get("response_range", {}).get("kvs") or []
        return (lock[0] if lock else None), (unb64(stamp[0].get("value")).decode() if stamp else "")

    def _put_fingerprint(self, fingerprint: str) -> dict[str, Any]:
        return {"request_put": {"key": b64(self.fingerprint_key), "value": b64(fingerprint.encode())}}

    async def last_fingerprint(self) -> str:
        answer = await self.client.call("kv/range", {"key": b64(self.fingerprint_key)})
        kvs = answer.get("kvs") or []
        return unb64(kvs[0].get("value")).decode() if kvs else ""

    def _record(self, kv: dict[str, Any]) -> dict[str, Any]:
        try:
            record = json.loads(unb64(kv.get("value")))
            if not isinstance(record, dict) or not isinstance(record.get("holder"), str):
                raise ValueError("not a lock record")
        except ValueError as exc:
            raise StoreError(
                f"{self._describe()} holds something that is not a hedgeplug lock record "
                f"({unb64(kv.get('value'))[:100]!r}); is another program using this prefix?"
            ) from exc
        return record

    async def _revoke(self, lease_id: int) -> None:
        """Revoke an etcd lease; one that already ran out is fine."""
        if not lease_id:
            return
        try:
            await self.client.call("lease/revoke", {"ID": str(lease_id)})
        except StoreError as exc:
            if "lease not found" not in str(exc):
                raise

    async def _revoke_quietly(self, lease_id: int) -> None:
        # Cleanup of a lease nobody will use: if it fails the lease expires by itself.
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.client.timeout):
            try:
                await self._revoke(lease_id)
            except StoreError:
                pass

    async def _create(
        self, value: bytes, lease_id: int, fingerprint: str
    ) -> tuple[bool, dict[str, Any] | None, int]:
        """Create the lock key if absent; (created, existing kv, revision of the write)."""
        answer = await self.client.call("kv/txn", {
            "compare": [{"key": b64(self.key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(self.key), "value": b64(value),
                                         "lease": str(lease_id)}},
                        self._put_fingerprint(fingerprint)],
            "failure": [{"request_range": {"key": b64(self.key)}}],
        })
        revision = num(answer.get("header", {}), "revision")
        if answer.get("succeeded"):
            return True, None, revision
        responses = answer.get("responses") or [{}]
        kvs = responses[0].get("response_range", {}).get("kvs") or []
        return False, (kvs[0] if kvs else None), revision

    # ------------------------------------------------------------ LockBackend

    async def acquire(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Lease | None:
        granted = await self.client.call("lease/grant", {"TTL": str(lease_seconds(ttl))})
        lease_id, granted_ttl = num(granted, "ID"), num(granted, "TTL")
        if not lease_id or granted_ttl <= 0:
            raise StoreError(f"etcd {self.client.endpoint}: lease grant answered {granted!r}")
        value = json.dumps({"holder": holder, "address": address, "ttl": ttl}).encode()
        try:
            created, existing, revision = await self._create(value, lease_id, fingerprint)
            if not created and existing is not None:
                if self._record(existing).get("holder") != holder:
                    await self._revoke_quietly(lease_id)
                    return None
                # We hold it already (the election lost track, e.g. after a late
                # renewal): rewrite the key onto the new lease in one transaction
                # guarded by its mod_revision, so the token moves on atomically;
                # the old lease is left without keys and revoked.
                created, revision = await self._rewrite_if_unchanged(
                    existing, value, lease_id, fingerprint
                )
                if created:
                    await self._revoke_quietly(num(existing, "lease"))
        except BaseException:
            await self._revoke_quietly(lease_id)
            raise
        if not created:
            await self._revoke_quietly(lease_id)
            return None
        return Lease(lock=self.lock_name, holder=holder, address=address, token=revision,
                     ttl=ttl, remaining=float(granted_ttl), fingerprint=fingerprint)

    async def _rewrite_if_unchanged(
        self, kv: dict[str, Any], value: bytes, lease_id: int, fingerprint: str
    ) -> tuple[bool, int]:
        answer = await self.client.call("kv/txn", {
            "compare": [{"key": b64(self.key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(num(kv, "mod_revision"))}],
            "success": [{"request_put": {"key": b64(self.key), "value": b64(value),
                                         "lease": str(lease_id)}},
                        self._put_fingerprint(fingerprint)],
        })
        return bool(answer.get("succeeded")), num(answer.get("header", {}), "revision")

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        # etcd keeps a lease's granted ttl; a different `ttl` here applies from
        # the next acquisition on.
        kv, stamped = await self._range_lock()
        if kv is None or num(kv, "mod_revision") != lease.token:
            return None  # gone, or written by a later acquisition
        if stamped != lease.fingerprint:
            # The holder's primary key changed: stamp it while the lock key is still ours
            # (the lock key itself is not rewritten: its mod_revision is the token).
            answer = await self.client.call("kv/txn", {
                "compare": [{"key": b64(self.key), "target": "MOD", "result": "EQUAL",
                             "mod_revision": str(lease.token)}],
                "success": [self._put_fingerprint(lease.fingerprint)],
            })
            if not answer.get("succeeded"):
                return None
        answer = await self.client.call("lease/keepalive", {"ID": str(num(kv, "lease"))})
        result = answer.get("result", answer)
        remaining = num(result, "TTL")
        if remaining <= 0:
            return None  # the etcd lease ran out before the keepalive arrived
        return Lease(lock=self.lock_name, holder=lease.holder, address=lease.address,
                     token=lease.token, ttl=lease.ttl, remaining=float(remaining),
                     fingerprint=lease.fingerprint)

    async def release(self, lease: Lease) -> None:
        answer = await self.client.call("kv/txn", {
            "compare": [{"key": b64(self.key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(lease.token)}],
            "success": [{"request_delete_range": {"key": b64(self.key), "prev_kv": True}}],
        })
        if not answer.get("succeeded"):
            return  # not ours any more: nothing to give up
        deleted = (answer.get("responses") or [{}])[0].get("response_delete_range", {})
        for kv in deleted.get("prev_kvs") or []:
            await self._revoke(num(kv, "lease"))

    async def current(self) -> Lease | None:
        kv, stamped = await self._range_lock()
        if kv is None:
            return None
        record = self._record(kv)
        alive = await self.client.call("lease/timetolive", {"ID": str(num(kv, "lease"))})
        remaining = num(alive, "TTL")
        if remaining < 0:
            return None  # the lease is gone; its key goes with it
        # etcd truncates the time left to whole seconds, so 0 means "under a
        # second left, or ran out and not yet revoked" (etcd revokes expired
        # leases in a loop every 500 ms): still reported as held.
        return Lease(lock=self.lock_name, holder=record["holder"],
                     address=str(record.get("address", "")), token=num(kv, "mod_revision"),
                     ttl=float(record.get("ttl") or num(alive, "grantedTTL")),
                     remaining=float(remaining), fingerprint=stamped)

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------ Watchable

    async def watch(self) -> AsyncIterator[None]:
        """Yield when the lock key is created or deleted (and once per (re)connection)."""
        request = {"create_request": {"key": b64(self.key)}}
        async for result in self.client.stream("watch", request):
            if result.get("canceled"):
                raise StoreError(f"etcd {self.client.endpoint}: watch on {self._describe()} "
                                 f"was cancelled: {result.get('cancel_reason', 'no reason')}")
            if result.get("created") or result.get("events"):
                # After (re)connecting something may have changed unseen: wake the reader too.
                yield None

    # ------------------------------------------------------------ RowStorage

    def _row_key(self, key: str) -> bytes:
        return self.rows_prefix + key.encode()

    def _row(self, kv: dict[str, Any]) -> Row:
        return Row(key=unb64(kv.get("key"))[len(self.rows_prefix):].decode(),
                   value=unb64(kv.get("value")), version=num(kv, "version"))

    async def row_get(self, key: str) -> Row | None:
        answer = await self.client.call("kv/range", {"key": b64(self._row_key(key))})
        kvs = answer.get("kvs") or []
        return self._row(kvs[0]) if kvs else None

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        # etcd's per-key `version` is exactly the row contract: 1 on creation,
        # +1 per write, and 0 for a key that does not exist.
        put = {"key": b64(self._row_key(key)), "value": b64(value), "prev_kv": True}
        if expect is None:
            answer = await self.client.call("kv/put", put)
            version = num(answer.get("prev_kv") or {}, "version") + 1
            return Row(key=key, value=value, version=version)
        answer = await self.client.call("kv/txn", {
            "compare": [{"key": put["key"], "target": "VERSION", "result": "EQUAL",
                         "version": str(expect)}],
            "success": [{"request_put": put}],
        })
        if not answer.get("succeeded"):
            return None
        return Row(key=key, value=value, version=expect + 1)

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool:
        delete = {"request_delete_range": {"key": b64(self._row_key(key))}}
        compare = []
        if expect is not None:
            compare = [{"key": b64(self._row_key(key)), "target": "VERSION", "result": "EQUAL",
                        "version": str(expect)}]
        answer = await self.client.call("kv/txn", {"compare": compare, "success": [delete]})
        if not answer.get("succeeded"):
            return False
        deleted = (answer.get("responses") or [{}])[0].get("response_delete_range", {})
        return num(deleted, "deleted") > 0

    async def row_scan(self, prefix: str) -> list[Row]:
        start = self._row_key(prefix)
        answer = await self.client.call("kv/range", {"key": b64(start),
                                                     "range_end": b64(prefix_end(start))})
        return [self._row(kv) for kv in answer.get("kvs") or []]
