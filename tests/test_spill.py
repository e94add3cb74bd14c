"""Spill-over stores on real nodes in this process, over the real sqlite lock
and loopback tcp, on trio and asyncio: tiers and their hard limits, spill
order, reads in write order, SpillFull, ChunkLost naming the member, delete
and expiry freeing every tier on every member."""

from __future__ import annotations

import os
import random
from contextlib import AsyncExitStack

import anyio
import pytest

import hedgeplug
from hedgeplug.spill import (
    ChunkLost,
    SpillError,
    SpillExpired,
    SpillFull,
    open_spill,
    read_spill,
    serve_spill,
)
from hedgeplug.spill.service import spill_channel

KiB = 1024


def config(tmp_path, name):
    return {
        "node": {"id": name, "cluster": "spill", "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        # Small frames so chunks are cut into several pieces.
        "transport": {"use": "tcp", "bind": "127.0.0.1:0", "max_frame": "64KiB"},
        "membership": {"use": "heartbeat", "interval": "200ms", "missed": 3},
    }


async def settle(nodes, timeout=10):
    with anyio.fail_after(timeout):
        while True:
            ids = {n.id for n in nodes}
            if sum(n.is_leader for n in nodes) == 1 and all(n.view.ids == ids for n in nodes):
                return
            await anyio.sleep(0.05)


def chunks(count, low, high, seed=7):
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(low, high)) for _ in range(count)]


def check_limits(service):
    stats = service.stats()
    assert stats["memory_peak"] <= stats["memory_limit"] <= stats["memory_budget"], stats
    assert stats["disk_peak"] <= stats["disk_limit"], stats
    # A real measurement beside the accounting: the bytes objects held and the files on disk.
    assert service.local.memory.measured() <= stats["memory_limit"] + 64 * 1024, stats
    assert service.local.disk.file_bytes() <= stats["disk_limit"], stats


def spill_files(directory):
    return [os.path.join(d, f) for d, _, files in os.walk(directory) for f in files]


@pytest.mark.anyio
async def test_one_node_fills_memory_then_disk_and_reads_back_in_order(tmp_path):
    data = chunks(40, 1, 100 * KiB)
    async with hedgeplug.open_node(config(tmp_path, "a")) as a:
        await settle([a])
        async with open_spill(a, "batch", memory="512KiB", disk="8MiB", directory=tmp_path / "spill") as store:
            service = store.service
            for i, chunk in enumerate(data):
                assert await store.append(chunk) == i
                check_limits(service)
            assert service.stats()["memory_used"] <= 512 * KiB
            assert service.stats()["disk_used"] > 0  # it overflowed to disk
            await store.append(b"")  # an empty chunk is a chunk too
            got = [c async for c in store.read()]
            assert got == [*data, b""]
            assert store.holders() == {"a": sum(map(len, data))}
        assert service.stats()["memory_used"] == service.stats()["disk_used"] == 0
        assert spill_files(tmp_path / "spill") == []


@pytest.mark.anyio
async def test_full_everywhere_is_spill_full_and_stores_nothing_of_the_chunk(tmp_path):
    async with hedgeplug.open_node(config(tmp_path, "a")) as a:
        await settle([a])
        async with open_spill(a, "tight", memory="120KiB", disk="150KiB", directory=tmp_path) as store:
            # Pieces are 60 KiB (64 KiB frames); held pieces get 90 of the 120 KiB
            # of memory (the rest is for pieces in flight): 60 to memory, 60 to disk, 30 to memory.
            await store.append(b"x" * 150 * KiB)
            with pytest.raises(SpillFull, match=r"'tight': no room for chunk 1 .*memory .*disk .*no other members"):
                await store.append(b"y" * 120 * KiB)  # 60 to disk, then 60 finds no room
            check_limits(store.service)
            # The first piece was undone; its bytes stay in the file, so they stay counted.
            assert store.service.stats()["disk_used"] == 120 * KiB
            assert store.service.stats()["memory_used"] == 90 * KiB
            assert [c async for c in store.read()] == [b"x" * 150 * KiB]
            await store.append(b"z")
            assert [len(c) async for c in store.read()] == [150 * KiB, 1]
        with pytest.raises(SpillError, match="ttl must be above zero"):
            async with open_spill(a, "bad", ttl=0):
                pass


@pytest.mark.anyio
async def test_overflow_goes_to_members_in_view_order_within_their_own_limits(tmp_path):
    data = chunks(30, 10 * KiB, 150 * KiB)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "abcd"]
        await settle(nodes)
        a = nodes[0]
        services = {}
        for n in nodes[1:]:
            services[n.id] = await stack.enter_async_context(
                serve_spill(n, memory="256KiB", disk="512KiB", directory=tmp_path / n.id)
            )
        store = await stack.enter_async_context(
            open_spill(a, "wide", memory="256KiB", disk="256KiB", directory=tmp_path / "a")
        )
        services["a"] = store.service
        for chunk in data:
            await store.append(chunk)
            for service in services.values():
                check_limits(service)
        holders = store.holders()
        assert list(holders)[0] == "a" and len(holders) >= 3, holders
        assert [c async for c in store.read()] == data
        # Overflow takes members in the store's rendezvous order, filling each before the next.
        from hedgeplug.spill.placement import rendezvous_order

        order = [h for h in rendezvous_order("wide", ["b", "c", "d"]) if h in holders]
        assert list(holders)[1:] == order
        for member in order[:-1]:
            total = services[member].stats()
            assert total["memory_used"] + total["disk_used"] > total["memory_limit"] + total["disk_limit"] - 64 * KiB
        # Nobody has room left for 2 MiB more: a clear SpillFull naming the full members.
        with pytest.raises(SpillFull) as caught:
            for _ in range(40):
                await store.append(os.urandom(60 * KiB))
        assert all(f"{m}: full" in str(caught.value) for m in "bcd")
        for service in services.values():
            check_limits(service)
        # Delete frees every tier on every member.
        await store.delete()
        for service in services.values():
            stats = service.stats()
            assert stats["memory_used"] == stats["disk_used"] == stats["stores"] == 0, stats
        assert [p for p in spill_files(tmp_path) if p.endswith(".spill")] == []
        with pytest.raises(SpillError, match="'wide' was deleted"):
            await store.append(b"more")


@pytest.mark.anyio
async def test_a_killed_holder_is_named_by_chunk_lost(tmp_path):
    data = chunks(8, 30 * KiB, 50 * KiB)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "abc"]
        await settle(nodes)
        a, b, c = nodes
        for n in (b, c):
            await stack.enter_async_context(serve_spill(n, memory="128KiB", disk="96KiB", directory=tmp_path))
        store = await stack.enter_async_context(
            open_spill(a, "doomed", memory="64KiB", disk="64KiB", directory=tmp_path)
        )
        for chunk in data:
            await store.append(chunk)
        holders = store.holders()
        assert list(holders)[0] == "a" and len(holders) >= 2, holders
        victim = next(n for n in (b, c) if n.id == list(holders)[-1])
        first_lost = next(p.chunk for p in store.pieces if p.holder == victim.id)
        victim.kill()
        with anyio.fail_after(10):
            while victim.id in a.view.ids:
                await anyio.sleep(0.05)
        got = []
        with pytest.raises(ChunkLost) as caught:
            async for chunk in store.read():
                got.append(chunk)
        assert caught.value.member == victim.id and caught.value.chunk == first_lost
        assert str(caught.value) == (
            f"chunk {first_lost} of store 'doomed' was held by member {victim.id}, which left the cluster"
        )
        assert got == []  # checked before the first chunk: never a short read


@pytest.mark.anyio
async def test_a_holder_failing_during_the_read_is_named(tmp_path):
    data = chunks(8, 50 * KiB, 60 * KiB)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "ab"]
        await settle(nodes)
        a, b = nodes
        await stack.enter_async_context(serve_spill(b, memory="1MiB", disk="0", directory=tmp_path))
        store = await stack.enter_async_context(open_spill(a, "s", memory="80KiB", disk="0", directory=tmp_path))
        for chunk in data:
            await store.append(chunk)
        assert list(store.holders()) == ["a", "b"]
        got = []
        with pytest.raises(ChunkLost, match="held by member b, which") as caught:
            async for chunk in store.read():
                got.append(chunk)
                if len(got) == 1:
                    b.kill()  # still in the view: the read itself fails
        assert caught.value.member == "b"
        assert got == data[: len(got)] and len(got) < len(data)


@pytest.mark.anyio
async def test_expiry_after_ttl_unused_frees_every_member(tmp_path):
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "ab"]
        await settle(nodes)
        a, b = nodes
        held = await stack.enter_async_context(serve_spill(b, memory="1MiB", disk="1MiB", directory=tmp_path))
        store = await stack.enter_async_context(
            open_spill(a, "short", memory="64KiB", disk="0", directory=tmp_path, ttl="600ms")
        )
        for _ in range(4):
            await store.append(b"q" * 50 * KiB)
        assert held.stats()["memory_used"] > 0
        # In use (a read every 300 ms) it outlives its ttl several times over.
        for _ in range(5):
            await anyio.sleep(0.3)
            assert len([c async for c in store.read()]) == 4
        idle_from = anyio.current_time()
        with anyio.fail_after(5):
            while store.state == "open" or held.stats()["stores"]:
                await anyio.sleep(0.05)
        assert anyio.current_time() - idle_from >= 0.6 - 0.3  # not before a ttl since the last read
        assert held.stats()["memory_used"] == held.stats()["stores"] == 0
        assert store.service.stats()["memory_used"] == 0
        with pytest.raises(SpillExpired, match="'short' expired after 0.6s unused"):
            await store.append(b"late")


@pytest.mark.anyio
async def test_holders_expire_the_pieces_of_a_writer_that_stopped_touching_them(tmp_path):
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "ab"]
        await settle(nodes)
        a, b = nodes
        held = await stack.enter_async_context(serve_spill(b, memory="1MiB", disk="1MiB", directory=tmp_path))
        # A writer puts one piece the way a store does, then falls silent (as if it died).
        put = {"op": "put", "store": "a/orphan", "seq": 0, "data": b"o" * 10 * KiB, "ttl": 0.4}
        assert await spill_channel(a).request(b.address, put, 5) == "memory"
        started = anyio.current_time()
        with anyio.fail_after(5):
            while held.stats()["stores"]:
                await anyio.sleep(0.02)
        # Holders wait 1.5 ttl: the writer expires a store itself at 1 ttl.
        assert anyio.current_time() - started >= 0.55
        assert held.stats()["memory_used"] == 0
        missing = await spill_channel(a).request(b.address, {"op": "touch", "stores": ["a/orphan"]}, 5)
        assert missing == ["a/orphan"]
        with pytest.raises(hedgeplug.RemoteError, match="bad store key"):
            await spill_channel(a).request(b.address, {"op": "put", "store": 5}, 5)


@pytest.mark.anyio
async def test_members_that_do_not_serve_spill_are_skipped_and_named(tmp_path):
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "abc"]
        await settle(nodes)
        a, b, c = nodes  # b serves nothing
        lent = await stack.enter_async_context(serve_spill(c, memory="256KiB", disk="0", directory=tmp_path))
        store = await stack.enter_async_context(open_spill(a, "skip", memory="0", disk="0", directory=tmp_path))
        written = []
        with pytest.raises(SpillFull) as caught:
            for i in range(20):
                await store.append(bytes([i]) * 40 * KiB)
                written.append(bytes([i]) * 40 * KiB)
                check_limits(lent)
        assert set(store.holders()) == {"c"} and len(written) >= 3
        assert "b: unreachable or not serving spill" in str(caught.value) and "c: full" in str(caught.value)
        assert [chunk async for chunk in store.read()] == written
        check_limits(lent)


@pytest.mark.anyio
async def test_a_silent_writer_gets_its_credit_back(tmp_path):
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "ab"]
        await settle(nodes)
        a, b = nodes
        held = await stack.enter_async_context(serve_spill(b, memory="1MiB", disk="0", directory=tmp_path))
        # A writer opens a write stream, takes credit, sends one piece, then goes silent.
        opening = {"op": "write", "store": "a/quiet", "ttl": 0.4}
        async with await spill_channel(a).open_stream(b.address, opening) as stream:
            await stream.send(["reserve", 200 * KiB])
            assert await stream.receive() == ["granted", 200 * KiB, 0]
            await stream.send(["piece", 0, b"p" * KiB, "memory"])
            await stream.send(["sync"])
            assert await stream.receive() == ["synced", 1]
            assert held.stats()["memory_used"] == 200 * KiB  # credit counts against the limit
            with anyio.fail_after(5):
                while held.stats()["memory_used"]:
                    await anyio.sleep(0.05)  # credit back at 0.6 s, the piece expired by then too
        assert held.stats()["stores"] == 0


@pytest.mark.anyio
async def test_any_node_reads_a_store_through_the_writers_index(tmp_path):
    data = chunks(12, 1, 40 * KiB) + [b""]
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(hedgeplug.open_node(config(tmp_path, n))) for n in "abc"]
        await settle(nodes)
        a, b, c = nodes
        await stack.enter_async_context(serve_spill(b, memory="1MiB", disk="0", directory=tmp_path))
        store = await stack.enter_async_context(open_spill(a, "shared", memory="100KiB", disk="0", directory=tmp_path))
        for chunk in data:
            await store.append(chunk)
        assert list(store.holders()) == ["a", "b"]
        # c serves no spill itself; it finds the writer by asking, or is told it.
        assert [x async for x in read_spill(c, "shared")] == data
        assert [x async for x in read_spill(b, "shared", writer="a")] == data
        assert [x async for x in read_spill(a, "shared")] == data  # the writer reads its own
        with pytest.raises(SpillError, match="no live member writes a spill store named 'other'"):
            [x async for x in read_spill(c, "other")]
        with pytest.raises(SpillError, match="member a writes no spill store named 'other'"):
            [x async for x in read_spill(c, "other", writer="a")]
        with pytest.raises(SpillError, match="node a already writes a spill store named 'shared'"):
            async with open_spill(a, "shared"):
                pass
        await store.delete()
        with pytest.raises(SpillError, match="^a: spill store 'shared' was deleted$"):
            [x async for x in read_spill(c, "shared")]


def test_the_index_crosses_the_wire_in_pages_and_comes_back_whole():
    from hedgeplug.spill.index import PAGE, IndexReader, Piece, index_pages

    rng = random.Random(3)
    pieces, chunk = [], 0
    for _ in range(2 * PAGE + 17):  # three pages, holders and chunk ends at random
        last = rng.random() < 0.3
        pieces.append(Piece(rng.choice("abc"), 0, chunk, last))
        chunk += last
    pieces[-1] = Piece(pieces[-1].holder, 0, pieces[-1].chunk, True)
    pages = list(index_pages(pieces))
    assert len(pages) == 3
    reader = IndexReader()
    for page in pages:
        reader.add(page)
    assert reader.pieces == pieces
    for bad in (["page", [["a", 2]], b"\x00"], ["page", [["a", 0]], b""], ["page", "x", b""], ["other"]):
        with pytest.raises(SpillError, match="malformed|out of range"):
            IndexReader().add(bad)
