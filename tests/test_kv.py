"""The key/value log through nodes over the real sqlite store and loopback
sockets (trio and asyncio), the blocking facade, and the errors a user gets.
The fenced log's store contract runs in test_lock_sqlite.py and
test_memory_plugins.py; the fault scenario in test_kv_sim.py; real processes
in test_kv_processes.py."""

from __future__ import annotations

import anyio
import pytest

import hedgeplug
from hedgeplug.errors import HedgeplugError, NoLeader
from hedgeplug.state.kv_limits import MAX_KEY_BYTES, LogLimitError


def config(tmp_path, name, **lock):
    return {
        "node": {"id": name, "cluster": "kv", "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s", **lock},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


async def settle(nodes, timeout=10):
    with anyio.fail_after(timeout):
        while True:
            leaders = [n for n in nodes if n.is_leader]
            if len(leaders) == 1 and all(n.leader is not None for n in nodes):
                return leaders[0]
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_put_through_a_follower_get_history_keys_watch(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        seen: list = []

        async def watcher(task_status=anyio.TASK_STATUS_IGNORED):
            gen = leader.kv.watch("cfg/", poll=0.02)
            task_status.started()
            async for entry in gen:
                seen.append(entry)
                if len(seen) == 3:
                    return

        async with anyio.create_task_group() as tg:
            await tg.start(watcher)
            await anyio.sleep(0.1)  # the watch has read its starting revision
            first = await follower.kv.put("cfg/mode", b"fast")
            assert (first.key, first.value, first.version) == ("cfg/mode", b"fast", 1)
            assert first.token == leader.token
            second = await follower.kv.put("cfg/mode", "slow")  # str is sent as UTF-8
            await leader.kv.put("other", b"x")
            third = await leader.kv.put("cfg/size", b"\x00\x01")
            assert second.version == 2 and second.revision > first.revision
        assert [e.value for e in seen] == [b"fast", b"slow", b"\x00\x01"]
        latest = await leader.kv.get("cfg/mode")
        assert latest == second
        assert await follower.kv.get("missing") is None
        assert [e.value for e in await follower.kv.history("cfg/mode")] == [b"slow", b"fast"]
        assert await follower.kv.history("cfg/mode", limit=1) == [second]
        assert await follower.kv.history("cfg/mode", limit=1, oldest_first=True) == [first]
        assert await follower.kv.keys() == ["cfg/mode", "cfg/size", "other"]
        assert await follower.kv.keys("cfg/") == ["cfg/mode", "cfg/size"]
        assert third.committed_at >= first.committed_at
        assert await follower.kv.trim("cfg/mode", 1) == 1
        assert await leader.kv.history("cfg/mode") == [second]
        assert follower.status()["counters"]["kv-puts"] == 2
        assert leader.status()["counters"]["kv-appends"] == 4
        assert leader.status()["counters"]["kv-trims"] == 1


@pytest.mark.anyio
async def test_bad_keys_and_values_are_refused_before_anything_is_sent(tmp_path):
    async with hedgeplug.open_node(config(tmp_path, "a")) as a:
        await settle([a])
        before = dict(a.counters)
        with pytest.raises(LogLimitError, match="limit is 65536"):
            await a.kv.put("k", b"x" * (64 * 1024 + 1))
        with pytest.raises(LogLimitError, match=f"limit is {MAX_KEY_BYTES}"):
            await a.kv.put("k" * (MAX_KEY_BYTES + 1), b"x")
        for key in ("", "a\0b", 7):
            with pytest.raises(LogLimitError, match="key"):
                await a.kv.put(key, b"x")
        with pytest.raises(LogLimitError, match="bytes or str"):
            await a.kv.put("k", 12)
        with pytest.raises(LogLimitError, match="keep"):
            await a.kv.trim("k", 0)
        with pytest.raises(HedgeplugError, match="limit"):
            await a.kv.history("k", limit=0)
        assert a.counters.get("kv-appends", 0) == before.get("kv-appends", 0)
        assert await a.kv.keys() == []


@pytest.mark.anyio
async def test_no_leader_within_the_timeout_is_a_clear_error(tmp_path):
    # A node that observes but never contends: nobody ever leads.
    cfg = config(tmp_path, "watcher")
    async with hedgeplug.open_node(cfg) as node:
        node.parts.election.contend = False
        with anyio.fail_after(5):
            with pytest.raises(NoLeader, match="no leader accepted the write within 0.5s"):
                await node.kv.put("k", b"v", timeout=0.5)


@pytest.mark.anyio
async def test_a_deposed_leader_cannot_write(tmp_path):
    """The store, not the node's belief, decides: an append carrying the
    token of a lease that was taken over is refused in the store."""
    async with hedgeplug.open_node(config(tmp_path, "a")) as a:
        await settle([a])
        old = a.parts.election.lease
        assert old is not None and await a.parts.lock.log_append(old.token, "k", b"ok") is not None
        await a.parts.election.release(1.0)  # stop leading (a graceful step-down)
        a.parts.election._stopping = False
        async with hedgeplug.open_node(config(tmp_path, "b")) as b:
            with anyio.fail_after(10):
                while not (a.is_leader or b.is_leader):
                    await anyio.sleep(0.05)
            assert await a.parts.lock.log_append(old.token, "k", b"stale") is None
            assert [e.value for e in await b.kv.history("k")] == [b"ok"]


def test_blocking_facade(tmp_path):
    with hedgeplug.BlockingNode(config(tmp_path, "a")) as node:
        node.wait_leader(10)
        entry = node.kv.put("k", b"v1")
        node.kv.put("k", b"v2")
        assert entry.version == 1
        assert node.kv.get("k").value == b"v2"
        assert [e.value for e in node.kv.history("k", oldest_first=True)] == [b"v1", b"v2"]
        assert node.kv.keys("") == ["k"]
        watched = node.kv.watch("k", since=0)
        assert [next(watched).value for _ in range(2)] == [b"v1", b"v2"]
        watched.close()
        assert node.kv.trim("k", 1) == 1


def test_command_line_through_any_node(tmp_path, capsys):
    from hedgeplug.cli import main

    with hedgeplug.BlockingNode(config(tmp_path, "a")) as node:
        node.wait_leader(10)
        where = ["-a", node.address, "--cluster", "kv", "--timeout", "5s"]
        assert main(["kv", "put", *where, "cfg/mode", "fast"]) == 0
        assert "cfg/mode version 1 revision" in capsys.readouterr().out
        assert main(["kv", "put", *where, "cfg/mode", "slow", "--json"]) == 0
        assert '"version": 2' in capsys.readouterr().out
        assert main(["kv", "get", *where, "cfg/mode"]) == 0
        assert capsys.readouterr().out == "slow\n"
        assert main(["kv", "history", *where, "cfg/mode", "--oldest"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["VERSION", "REVISION", "TOKEN", "COMMITTED", "VALUE"]
        assert [line.split()[-1] for line in lines[1:]] == ["fast", "slow"]
        assert main(["kv", "keys", *where, "cfg/"]) == 0
        assert capsys.readouterr().out == "cfg/mode\n"
        assert main(["kv", "get", *where, "nothing"]) == 3
        assert "no value for 'nothing'" in capsys.readouterr().err
        # User mistakes: a message and status 2, never a traceback.
        assert main(["kv", "put", *where, "k"]) == 2
        assert "give VALUE or --stdin" in capsys.readouterr().err
        assert main(["kv", "put", *where, "", "v"]) == 1
        assert "key must be a non-empty string" in capsys.readouterr().err
        assert main(["kv", "trim", *where, "cfg/mode", "--keep", "0"]) == 2
        assert "--keep must be at least 1" in capsys.readouterr().err
        assert main(["kv", "trim", *where, "cfg/mode", "--keep", "1"]) == 0
        assert capsys.readouterr().out == "dropped 1\n"
        assert node.status()["counters"]["kv-appends"] == 2


@pytest.mark.anyio
async def test_malformed_requests_from_the_wire_get_clear_errors(tmp_path):
    from hedgeplug.control import ControlClient
    from hedgeplug.errors import RemoteError
    from hedgeplug.state.kv_leader import KV_CHANNEL

    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        ask = follower.parts.dispatcher.request
        for bad, why in (("garbage", "malformed key/value log request"),
                         ({"op": "append", "key": "", "value": b"x"}, "non-empty string"),
                         ({"op": "append", "key": "k", "value": 5}, "bytes or str"),
                         ({"op": "append", "key": "k", "value": b"x" * 70000}, "limit is 65536"),
                         ({"op": "trim", "key": "k", "keep": -1}, "keep must be")):
            with pytest.raises(RemoteError, match=why):
                await ask(leader.address, KV_CHANNEL, bad, 5.0)
        assert await ask(leader.address, KV_CHANNEL, {"op": "ping"}, 5.0) == "pong"
        async with ControlClient(cluster="kv") as client:
            with pytest.raises(RemoteError, match="unknown control operation 'kv.nope'"):
                await client.call(follower.address, {"op": "kv.nope"}, 5.0)
            with pytest.raises(RemoteError, match=r"control timeout must be"):
                await client.call(follower.address, {"op": "kv.get", "key": "k", "timeout": -1}, 5.0)
        assert leader.counters.get("kv-appends", 0) == 0


@pytest.mark.anyio
async def test_watch_wakes_on_each_append_not_on_a_poll(tmp_path):
    """With the safety read 60 s away, every entry still reaches a watcher on
    the leader and one on a follower within seconds: the leader wakes them.
    Entries under other prefixes do not make the watch spin."""
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        seen: dict[str, list] = {"leader": [], "follower": []}

        async def watcher(name, node, task_status=anyio.TASK_STATUS_IGNORED):
            gen = node.kv.watch("w/", poll=60)
            task_status.started()
            async for entry in gen:
                seen[name].append(entry.value)

        async with anyio.create_task_group() as tg:
            await tg.start(watcher, "leader", leader)
            await tg.start(watcher, "follower", follower)
            await anyio.sleep(0.2)  # both read their starting revision and wait
            reads_before = leader.counters.get("kv-gets", 0)
            for i in range(5):
                await follower.kv.put("other", b"noise")
                await follower.kv.put("w/x", str(i))
                with anyio.fail_after(5):
                    while not all(len(values) == i + 1 for values in seen.values()):
                        await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert seen == {"leader": [b"0", b"1", b"2", b"3", b"4"]} | {"follower": [b"0", b"1", b"2", b"3", b"4"]}
        assert leader.counters.get("kv-gets", 0) == reads_before  # watches read via log_since only


@pytest.mark.anyio
async def test_watch_follows_a_change_of_leader(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
        hedgeplug.open_node(config(tmp_path, "c")) as c,
    ):
        leader = await settle([a, b, c])
        watching = next(n for n in (a, b, c) if n is not leader)
        writer = next(n for n in (a, b, c) if n is not leader and n is not watching)
        seen = []

        async def watcher(task_status=anyio.TASK_STATUS_IGNORED):
            gen = watching.kv.watch("w/", poll=60)
            task_status.started()
            async for entry in gen:
                seen.append(entry.value)

        async with anyio.create_task_group() as tg:
            await tg.start(watcher)
            await anyio.sleep(0.2)
            await writer.kv.put("w/1", b"before")
            with anyio.fail_after(5):
                while seen != [b"before"]:
                    await anyio.sleep(0.01)
            leader.kill()  # the held request dies with it; the watcher moves to the next leader
            with anyio.fail_after(15):
                await writer.kv.put("w/2", b"after", timeout=15)
                while seen != [b"before", b"after"]:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_sqlite_gets_on_the_event_loop_match_the_threaded_reads_and_let_others_run(tmp_path):
    async with hedgeplug.open_node(config(tmp_path, "a")) as a:
        await settle([a])
        for i in range(20):
            await a.kv.put("k", f"v{i}")
        lock = a.parts.lock
        # limit None goes through the worker thread; small limits are read on the event loop.
        everything = await lock.log_read("k")
        assert await lock.log_read("k", limit=1) == everything[:1]
        assert await lock.log_read("k", limit=16) == everything[:16]
        assert await lock.log_read("k", limit=3, oldest_first=True) == everything[::-1][:3]
        assert lock._log._inline is not None  # the event-loop connection is in use
        assert (await a.kv.get("k")).value == b"v19"
        # A tight loop of gets lets other tasks run (every 16th read yields).
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.sleep(0)
            before = ticks
            for _ in range(160):
                await a.kv.get("k")
            assert ticks - before >= 5
            tg.cancel_scope.cancel()
        # Cancelled before it starts: a get is a cancellation point.
        with anyio.CancelScope() as scope:
            scope.cancel()
            await a.kv.get("k")
            raise AssertionError("not cancelled")
        assert scope.cancelled_caught


@pytest.mark.anyio
async def test_many_watches_on_one_node_leave_the_leader_slots_for_puts(tmp_path):
    """Seventy watches on a follower hold at most a few requests at the leader
    (which serves 64 at once per connection): puts from that follower are not
    starved, and every watch sees every entry."""
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        seen = [[] for _ in range(70)]

        async def watcher(values, task_status=anyio.TASK_STATUS_IGNORED):
            gen = follower.kv.watch("m/", poll=60)
            task_status.started()
            async for entry in gen:
                values.append(entry.value)

        async with anyio.create_task_group() as tg:
            for values in seen:
                await tg.start(watcher, values)
            await anyio.sleep(0.3)
            for i in range(3):
                with anyio.fail_after(5):
                    await follower.kv.put("m/k", str(i), timeout=5)
                    while not all(len(values) == i + 1 for values in seen):
                        await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert all(values == [b"0", b"1", b"2"] for values in seen)
