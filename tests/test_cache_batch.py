"""get_many's batched reads ("rm", one message per owner) and what they
leave to one-key reads: misses on the first owner, answers past one frame's
room, owners that do not know "rm"."""

from __future__ import annotations

import anyio
import pytest
from cache_cluster import CacheCluster

from hedgeplug.cache import ProtocolError
from hedgeplug.cache import messages as m
from hedgeplug.cache.batch import BATCH_KEYS, serve_read_many

pytestmark = pytest.mark.anyio


async def three(tg: anyio.abc.TaskGroup, **options):  # noqa: ANN201, ANN003
    cluster = CacheCluster(tg, **options)
    caches = [await cluster.start(name) for name in ("a", "b", "c")]
    await cluster.settle(3)
    return cluster, caches


async def test_get_many_sends_one_message_per_owner_and_answers_like_get():
    async with anyio.create_task_group() as tg:
        cluster, (a, b, c) = await three(tg)
        keys = [f"k{i}" for i in range(60)]
        await a.set_many({k: {"n": i} for i, k in enumerate(keys)})
        await a.delete("k0")
        batches: list[int] = []
        serve = b.server.dispatch

        async def counting(sender, payload):  # noqa: ANN001, ANN202
            if payload[0] == m.READ_MANY and sender == "c":
                batches.append(len(payload[1]))
            return await serve(sender, payload)

        b.server.dispatch = counting  # type: ignore[method-assign]
        got = await c.get_many([*keys, "nope", "k5"], default="-")
        assert got == {"k0": "-", **{k: {"n": i} for i, k in enumerate(keys) if i}, "nope": "-"}
        assert list(got) == [*keys, "nope"]
        first_b = [
            k for k in keys[1:]
            if "c" not in cluster.owners(k.encode()) and c.placement().owners(k.encode())[0] == "b"
        ]
        # b got every key it is asked first for in one message ("nope" and the
        # tombstone k0 may be among them).
        assert first_b and len(batches) == 1 and len(first_b) <= batches[0] <= len(first_b) + 2
        assert c.stats()["hits"] == 59 + 1 and c.stats()["misses"] == 2
        cluster.close()


async def test_keys_the_batch_left_are_read_one_at_a_time_from_every_owner():
    async with anyio.create_task_group() as tg:
        cluster, (a, b, c) = await three(tg)
        keys = [f"k{i}" for i in range(40)]
        await a.set_many({k: k.upper() for k in keys})
        by_name = {"a": a, "b": b, "c": c}
        # Take every key away from its first owner other than c: the batch to
        # it misses, and the one-key read finds the key on the other owner.
        for k in keys:
            owners = c.placement().owners(k.encode())
            first = next(o for o in owners if o != "c")
            if "c" not in owners:
                by_name[first].store.drop(k.encode())
        assert await c.get_many(keys) == {k: k.upper() for k in keys}
        cluster.close()


async def test_an_owner_without_rm_is_read_one_key_at_a_time():
    async with anyio.create_task_group() as tg:
        cluster, (a, b, c) = await three(tg)
        keys = [f"k{i}" for i in range(40)]
        await a.set_many({k: i for i, k in enumerate(keys)})
        for old in (a, b):
            serve = old.server.dispatch

            # Stands in for an older version of the cache, which knows no "rm".
            async def older(sender, payload, serve=serve):  # noqa: ANN001, ANN202
                if payload[0] == m.READ_MANY:
                    raise ProtocolError("unknown cache operation 'rm'")
                return await serve(sender, payload)

            old.server.dispatch = older  # type: ignore[method-assign]
        assert await c.get_many(keys) == {k: i for i, k in enumerate(keys)}
        cluster.close()


async def test_answers_past_one_frame_are_skipped_then_read_alone():
    async with anyio.create_task_group() as tg:
        cluster, (a, b, c) = await three(tg, max_memory="4MiB")
        keys = [f"big{i}" for i in range(12)]
        await a.set_many({k: bytes([i]) * 20_000 for i, k in enumerate(keys)})
        for cache in (a, b):
            cache.frame_limit = 50_000  # room for two of these values per reply
        answer = serve_read_many(a, [k.encode() for k in keys])
        kinds = [x[0] for x in answer[1]]
        assert "skip" in kinds and kinds.count("hit") >= 1
        assert await c.get_many(keys) == {k: bytes([i]) * 20_000 for i, k in enumerate(keys)}
        cluster.close()


async def test_a_malformed_batch_is_a_protocol_error():
    async with anyio.create_task_group() as tg:
        cluster, (a, _b, _c) = await three(tg)
        for bad in ([m.READ_MANY, "k"], [m.READ_MANY, ["k"]], [m.READ_MANY, [b"k"] * (BATCH_KEYS + 1)]):
            with pytest.raises(ProtocolError, match="malformed cache message 'rm'"):
                await a.server.dispatch("b", bad)
        assert a.stats()["protocol_errors"] == 3
        cluster.close()
