"""The cache over real sockets: loopback tcp, the sqlite lock in a temporary
directory, on trio and asyncio, and through the blocking facade."""

from __future__ import annotations

import anyio
import pytest
from cache_cluster import CacheCluster, tcp_config

import hedgeplug
from hedgeplug.cache import ValueTooLarge

pytestmark = pytest.mark.anyio


async def test_cache_over_loopback_tcp(tmp_path):
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, lock_path=str(tmp_path / "lock.db"), handoff_grace=0.5)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        keys = [f"k{i}".encode() for i in range(100)]
        await a.set_many({k: k * 10 for k in keys})
        assert await b.get_many(keys) == {k: k * 10 for k in keys}
        await cluster.start("c")
        await cluster.settle(3)
        await cluster.placed(keys)
        c = cluster.caches["c"]
        assert await c.get_many(keys) == {k: k * 10 for k in keys}
        assert c.stats()["handoff_keys_in"] > 0
        # The tcp transport's frame limit (1 MiB by default) is checked before sending.
        with pytest.raises(ValueTooLarge):
            await c.set("big", b"x" * (1 << 20))
        cluster.close()


def test_blocking_facade(tmp_path):
    lock = str(tmp_path / "lock.db")
    with hedgeplug.BlockingNode(tcp_config("a", "blocking", lock)) as node_a, hedgeplug.BlockingNode(
        tcp_config("b", "blocking", lock)
    ) as node_b:
        a = node_a.cache("c", max_memory="1MiB")
        b = node_b.cache("c", max_memory="1MiB")
        for _ in range(100):  # bounded: both nodes in both views
            if len(node_a.members) == 2 and len(node_b.members) == 2:
                break
            import time

            time.sleep(0.05)
        a.set("k", {"v": 1})
        assert b.get("k") == {"v": 1}
        assert b.get_or_load("other", lambda: "loaded") == "loaded"
        assert a.get("other") == "loaded"
        assert a.get_many(["k", "nope"]) == {"k": {"v": 1}, "nope": None}
        assert a.stats()["sets"] == 1
        a.close()
        b.close()
