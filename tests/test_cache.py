"""The cache end to end on real nodes in one process (see cache_cluster.py)."""

from __future__ import annotations

import anyio
import pytest
from cache_cluster import CacheCluster

from hedgeplug.cache import CacheError, ValueTooLarge
from hedgeplug.cache import messages as m

pytestmark = pytest.mark.anyio


async def test_set_get_delete_from_any_node():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg)
        a = await cluster.start("a")
        b = await cluster.start("b")
        c = await cluster.start("c")
        await cluster.settle(3)
        await a.set("user:1", {"name": "ada", "tags": [1, 2]})
        assert await b.get("user:1") == {"name": "ada", "tags": [1, 2]}
        assert await c.get(b"user:1") == {"name": "ada", "tags": [1, 2]}
        assert cluster.holders(b"user:1") == cluster.owners(b"user:1")
        assert len(cluster.owners(b"user:1")) == 2
        await c.delete("user:1")
        assert await a.get("user:1", "none") == "none"
        assert await b.get("missing") is None
        stats = a.stats()
        assert stats["hits"] == 0 and stats["misses"] == 1 and stats["sets"] == 1
        assert b.stats()["hits"] == 1
        cluster.close()


async def test_values_many_and_limits():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        await a.set_many({"k1": b"bytes", "k2": 2, "k3": [1, "x", None], b"k4": {"m": 1.5}})
        got = await b.get_many(["k1", "k2", "k3", b"k4", "nope"], default="-")
        assert got == {"k1": b"bytes", "k2": 2, "k3": [1, "x", None], b"k4": {"m": 1.5}, "nope": "-"}
        # The memory transport's frame limit is 1 MiB by default: refused before sending.
        with pytest.raises(ValueTooLarge, match="frame limit"):
            await a.set("big", b"x" * (1 << 20))
        with pytest.raises(ValueTooLarge):
            await a.set_many({"ok": 1, "big": b"x" * (1 << 20)})
        assert await b.get("ok") is None  # nothing of a refused batch was sent
        with pytest.raises(CacheError, match="msgpack"):
            await a.set("obj", object())
        with pytest.raises(CacheError, match="str or bytes"):
            await a.get(42)  # type: ignore[arg-type]
        with pytest.raises(CacheError, match="ttl must be a positive number"):
            await a.set("k", 1, ttl=-1)
        cluster.close()


async def test_entries_larger_than_the_memory_bound_are_refused():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, max_memory="16KiB")
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        with pytest.raises(ValueTooLarge, match="whole max_memory of 16384 bytes"):
            await a.set("big", b"x" * 20000)
        # An owner with a smaller bound than the writer's answers "too-large" at once.
        b.store.max_memory = 4096
        a.max_memory = 1 << 20
        with pytest.raises(ValueTooLarge, match="cannot hold"):
            await a.set("mid", b"x" * 8000)
        cluster.close()


async def test_ttl_expires_on_every_owner():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, ttl=0.3)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        await a.set("short", "v")
        await a.set("long", "v", ttl=None)
        assert await b.get("short") == "v"
        await anyio.sleep(0.4)
        assert await b.get("short") is None
        assert await b.get("long") == "v"
        assert a.stats()["expirations"] + b.stats()["expirations"] >= 1
        cluster.close()


async def test_memory_bound_evicts_least_recently_used():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, max_memory="64KiB", replicas=1)
        a = await cluster.start("a")
        for i in range(200):
            await a.set(f"k{i}", b"x" * 1000)
        assert a.store.used <= 64 * 1024
        assert a.stats()["evictions"] > 100
        assert await a.get("k199") == b"x" * 1000
        assert await a.get("k0") is None
        cluster.close()


async def test_a_non_owner_redirects_writes():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, replicas=1)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        key = next(f"k{i}".encode() for i in range(100) if a.placement().owners(f"k{i}".encode()) == ("a",))
        reply = await b.channel.request(
            cluster.nodes["b"].address, [m.WRITE, key, b"\x01", [99, "b"], None, m.MODE_CLIENT], 2.0
        )
        assert reply[0] == "redirect" and reply[1] == [["a", cluster.nodes["a"].address]]
        assert b.stats()["redirects"] == 1
        assert cluster.holders(key) == set()
        # A malformed message is refused with a clear error, counted.
        with pytest.raises(Exception, match="malformed cache message"):
            await b.channel.request(cluster.nodes["a"].address, [m.WRITE, "not bytes"], 2.0)
        assert a.stats()["protocol_errors"] == 1
        cluster.close()


async def test_versions_never_go_back_and_a_lagging_writer_still_wins():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        for i in range(5):
            await a.set("k", f"a{i}")
        # b's clock lags a's (as a writer that just started would): its first
        # attempt is refused as stale and retried above the version held.
        b.clock.counter = 0
        await b.set("k", "from b")
        assert await a.get("k") == "from b"
        assert a.stats()["stale_refused"] + b.stats()["stale_refused"] >= 1
        # A replica never takes an older version, whatever arrives late.
        before = a.store.get(b"k").version
        reply = await a.server.dispatch("b", [m.WRITE, b"k", b"\xa3old", [1, "z"], None, m.MODE_HANDOFF])
        assert reply[0] == "stale" and tuple(reply[1]) == before
        assert await a.get("k") == "from b"
        cluster.close()


async def test_a_reader_never_goes_back_to_an_older_value():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, replicas=1)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)
        key = next(f"k{i}".encode() for i in range(100) if a.placement().owners(f"k{i}".encode()) == ("b",))
        await a.set(key, "new")
        assert await a.get(key) == "new"
        # The owner loses the value and an older one arrives (as after a crash and a late copy).
        b.store.drop(key)
        b.store.apply(key, b"\xa3old", (0, "x"), None)
        assert await a.get(key) is None  # a hides the older value as a miss
        assert a.stats()["stale_hidden"] == 1
        assert await b.get(key) == "old"  # b never saw the newer one
        cluster.close()


async def test_get_or_load_runs_the_loader_once_across_the_cluster():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg)
        caches = [await cluster.start(n) for n in "abcd"]
        await cluster.settle(4)
        calls: list[str] = []
        results: list[object] = []

        def loader_for(name: str):
            async def loader() -> str:
                calls.append(name)
                await anyio.sleep(0.3)
                return f"loaded by {name}"

            return loader

        async def call(cache, name):
            results.append(await cache.get_or_load("expensive", loader_for(name)))

        async with anyio.create_task_group() as callers:
            for i, cache in enumerate(caches * 3):
                callers.start_soon(call, cache, f"{cache.node_id}{i}")
        assert len(calls) == 1
        assert results == [f"loaded by {calls[0]}"] * 12
        assert await caches[0].get("expensive") == f"loaded by {calls[0]}"
        assert sum(c.stats()["load_waits"] for c in caches) >= 3
        cluster.close()


async def test_a_failing_loader_lets_the_next_caller_load():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await cluster.settle(2)

        async def broken() -> str:
            await anyio.sleep(0.1)
            raise RuntimeError("database down")

        async def works() -> str:
            return "ok"

        outcome: dict[str, object] = {}

        async def first() -> None:
            try:
                await a.get_or_load("k", broken)
            except RuntimeError as exc:
                outcome["a"] = str(exc)

        async def second() -> None:
            await anyio.sleep(0.02)
            outcome["b"] = await b.get_or_load("k", works)

        async with anyio.create_task_group() as callers:
            callers.start_soon(first)
            callers.start_soon(second)
        assert outcome == {"a": "database down", "b": "ok"}
        cluster.close()


def _keys(n: int) -> list[bytes]:
    return [f"key{i}".encode() for i in range(n)]


async def test_scale_up_moves_keys_to_the_new_owners_and_reads_never_miss():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, handoff_grace=1.0, repair_interval=0.5)
        a = await cluster.start("a")
        await cluster.start("b")
        await cluster.settle(2)
        keys = _keys(200)
        await a.set_many({k: k.decode() for k in keys})
        misses: list[bytes] = []
        done, stopped = anyio.Event(), anyio.Event()

        async def read_all_the_time() -> None:
            while not done.is_set():
                for k in keys[::7]:
                    if await a.get(k) != k.decode():
                        misses.append(k)
                await anyio.sleep(0.01)
            stopped.set()

        tg.start_soon(read_all_the_time)
        for name in "cde":
            await cluster.start(name)
        await cluster.settle(5)
        await cluster.placed(keys)
        done.set()
        await stopped.wait()
        assert misses == []
        moved = sum(c.stats()["handoff_keys_in"] for c in cluster.caches.values())
        assert 0 < moved < 4 * len(keys)  # three joins one after another: keys may move twice
        assert sum(c.stats()["dropped_not_owner"] for c in cluster.caches.values()) > 0
        for name, cache in cluster.caches.items():
            assert cache.stats()["owned_keys"] == sum(1 for k in keys if name in cluster.owners(k))
        cluster.close()


async def test_a_graceful_leave_hands_keys_over_before_going():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, replicas=1, handoff_grace=0.5, repair_interval=0.5)
        a = await cluster.start("a")
        await cluster.start("b")
        await cluster.start("c")
        await cluster.settle(3)
        keys = _keys(150)
        await a.set_many({k: k.decode() for k in keys})
        on_b = [k for k in keys if cluster.owners(k) == {"b"}]
        assert on_b
        # With one replica, only b's own push can save its keys.
        await cluster.stop("b")
        await cluster.settle(2)
        assert [k for k in on_b if await a.get(k) != k.decode()] == []
        await cluster.placed(keys)
        cluster.close()


async def test_after_a_crash_the_survivors_copy_until_every_key_has_r_owners():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, replicas=2, handoff_grace=0.5, repair_interval=0.5)
        a = await cluster.start("a")
        for name in "bcd":
            await cluster.start(name)
        await cluster.settle(4)
        keys = _keys(200)
        await a.set_many({k: k.decode() for k in keys})
        cluster.kill("c")
        await cluster.settle(3)
        await cluster.placed(keys)
        assert all(len(cluster.holders(k)) == 2 for k in keys)
        assert [k for k in keys if await a.get(k) != k.decode()] == []
        cluster.close()


async def test_writes_during_a_crash_are_acknowledged_only_when_all_owners_have_them():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, replicas=2, write_timeout=0.1, request_timeout=0.05)
        a = await cluster.start("a")
        await cluster.start("b")
        await cluster.start("c")
        await cluster.settle(3)
        key = next(k for k in _keys(100) if cluster.owners(k) == {"a", "c"})
        cluster.kill("c")
        from hedgeplug.cache import WriteIncomplete

        with pytest.raises(WriteIncomplete, match="reached 1 of 2 owners"):
            await a.set(key, "during detection")
        await cluster.settle(2)
        await a.set(key, "after", timeout=5)
        assert cluster.holders(key) == {"a", "b"}
        cluster.close()


async def test_owners_leaving_together_hand_off_past_each_other():
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, replicas=2, handoff_grace=0.5, repair_interval=0.5)
        a = await cluster.start("a")
        for name in "bcde":
            await cluster.start(name)
        await cluster.settle(5)
        keys = _keys(300)
        await a.set_many({k: k.decode() for k in keys})
        both = [k for k in keys if cluster.owners(k) == {"b", "c"}]
        assert both
        # A scale-down: both owners of these keys go at the same instant.
        async with anyio.create_task_group() as stops:
            stops.start_soon(cluster.stop, "b")
            stops.start_soon(cluster.stop, "c")
        await cluster.settle(3)
        assert [k for k in both if await a.get(k) != k.decode()] == []
        await cluster.placed(keys)
        cluster.close()
