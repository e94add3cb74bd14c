"""Key rotation in a running cluster: real nodes in
this process over loopback tcp and the sqlite lock, messages flowing the
whole time, every drop counted (node counters and transport stats)."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

import hedgeplug
from hedgeplug import keyring as keyring_module
from hedgeplug.control import ControlClient
from hedgeplug.errors import TransportError
from hedgeplug.keyring import generate_key

NODES = ("a", "b", "c")
CLUSTER = "rotation"
ROUNDS_PER_NODE_STEP = 3  # traffic rounds while the cluster is mixed, after each node moves


def config(tmp_path: Path, name: str, transport: str = "tcp", **node: object) -> dict:
    return {
        "node": {"id": name, "cluster": CLUSTER, "stop_timeout": "2s", **node},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        "transport": {"use": transport, "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


def write_keys(path: Path, *keys: str) -> str:
    """Replace the file atomically, as the operator procedure says."""
    scratch = path.with_suffix(".new")
    scratch.write_text("# cluster keys, primary first\n" + "".join(k + "\n" for k in keys))
    scratch.chmod(0o600)
    os.replace(scratch, path)
    return str(path)


async def settle(nodes, timeout=15):
    with anyio.fail_after(timeout):
        while True:
            ids = {n.id for n in nodes}
            leaders = [n for n in nodes if n.is_leader]
            if len(leaders) == 1 and all(n.view.ids == ids for n in nodes):
                return leaders[0]
            await anyio.sleep(0.05)


def drops(node) -> dict[str, int]:
    status = node.status()
    found = {k: v for k, v in status["counters"].items() if k.startswith("drop.")}
    found.update({f"transport.{k}": v for k, v in status["transport"]["dropped"].items()})
    return found


class Traffic:
    """Rounds of send (each node to the leader), broadcast (each node to all)
    and a value through a stream each node holds open to the next one for
    the whole test; every one must succeed, every member must answer."""

    def __init__(self, nodes) -> None:
        self.nodes = nodes
        self.rounds = 0
        self.streams: list = []

        async def doubler(message, stream):
            async for value in stream:
                await stream.send(value * 2)

        for n in nodes:
            n.on_send(lambda payload, sender, me=n.id: [me, sender, payload])
            n.on_broadcast(lambda payload, me=n.id: me)
            n.channel("echo").handle_streams(doubler)

    async def open_streams(self, stack: AsyncExitStack) -> None:
        for n, peer in zip(self.nodes, self.nodes[1:] + self.nodes[:1], strict=True):
            self.streams.append(await stack.enter_async_context(await n.open_stream(peer.id, "echo")))

    async def round(self) -> None:
        everyone = sorted(n.id for n in self.nodes)
        for n in self.nodes:
            reply = await n.send(self.rounds, timeout=5)
            assert reply[1:] == [n.id, self.rounds], reply
            replies = await n.broadcast_all(self.rounds, timeout=5)
            assert all(r.ok for r in replies), [r for r in replies if not r.ok]
            assert sorted(r.payload for r in replies) == everyone
        for stream in self.streams:
            with anyio.fail_after(5):
                await stream.send(self.rounds)
                assert await stream.receive() == 2 * self.rounds
        self.rounds += 1

    async def run(self) -> None:
        while True:
            await self.round()
            await anyio.sleep(0.01)

    async def wait_rounds(self, n: int, timeout: float = 30) -> None:
        target = self.rounds + n
        with anyio.fail_after(timeout):
            while self.rounds < target:
                await anyio.sleep(0.02)


def frames_out(nodes) -> int:
    return sum(n.status()["transport"]["frames_out"] for n in nodes)


@pytest.fixture
def fast_key_files(monkeypatch):
    monkeypatch.setattr(keyring_module, "KEY_FILE_POLL", 0.2)
    monkeypatch.setattr(keyring_module, "KEY_FILE_SETTLE", 0.05)


async def move(node, path: Path, keys: list[str], timeout: float = 10) -> None:
    """Rewrite one node's key file and wait until the node applied it."""
    before = node.counters.get("keyring.reloads", 0)
    write_keys(path, *keys)
    with anyio.fail_after(timeout):
        while node.counters.get("keyring.reloads", 0) == before:
            await anyio.sleep(0.02)


async def status_with(key: str, address: str, transport: str = "tcp") -> dict:
    async with ControlClient(cluster=CLUSTER, key=key, transport=transport) as client:
        return await client.status(address, timeout=2)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_rolling_rotation_in_three_steps_drops_nothing(tmp_path, fast_key_files, transport):
    old, new = generate_key(), generate_key()
    steps = [("add", [old, new]), ("promote", [new, old]), ("remove", [new])]
    files = {n: tmp_path / f"{n}.keys" for n in NODES}
    for path in files.values():
        write_keys(path, old)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                hedgeplug.open_node(config(tmp_path, n, transport, key_file=str(files[n])))
            )
            for n in NODES
        ]
        await settle(nodes)
        traffic = Traffic(nodes)
        await traffic.open_streams(stack)  # opened under the old key, used through all steps
        report = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(traffic.run)
            await traffic.wait_rounds(2)
            for step, keys in steps:
                frames, rounds = frames_out(nodes), traffic.rounds
                for node in nodes:  # one node at a time; the others lag a step behind
                    await move(node, files[node.id], keys)
                    await traffic.wait_rounds(ROUNDS_PER_NODE_STEP)
                    assert {n.id: drops(n) for n in nodes} == {n.id: {} for n in nodes}
                report.append((step, frames_out(nodes) - frames, traffic.rounds - rounds))
            tg.cancel_scope.cancel()
        print(f"\n{transport}: rotation step, frames sent, traffic rounds"
              " (each: 3 sends, 3 broadcasts, 3 stream round trips):")
        for step, frames, rounds in report:
            print(f"  {step:<8} {frames:6d} {rounds:4d}")
        assert all(frames > 0 and rounds >= 3 * ROUNDS_PER_NODE_STEP for _, frames, rounds in report)
        assert {n.id: drops(n) for n in nodes} == {n.id: {} for n in nodes}
        assert all(n.counters.get("keyring.reloads") == 3 for n in nodes)
        # The end state: the new key opens every node, the old one none.
        for n in nodes:
            assert (await status_with(new, n.address, transport))["id"] == n.id
            with pytest.raises(TransportError, match="wrong cluster name or key"):
                await status_with(old, n.address, transport)
            assert n.counters.get("drop.auth") == 1


@pytest.mark.anyio
async def test_switching_one_node_straight_to_the_new_key_drops_frames(tmp_path, fast_key_files):
    """The counterpart: the same cluster, rotated in one step on one node,
    loses frames -- so the zero above is measured, not assumed."""
    old, new = generate_key(), generate_key()
    files = {n: tmp_path / f"{n}.keys" for n in NODES}
    for path in files.values():
        write_keys(path, old)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                hedgeplug.open_node(config(tmp_path, n, key_file=str(files[n])))
            )
            for n in NODES
        ]
        await settle(nodes)
        await move(nodes[1], files["b"], [new])
        with anyio.fail_after(10):
            # Heartbeats go from followers to the leader: whichever side of the
            # split leads counts the other side's frames it cannot open.
            while sum(drops(n).get("drop.auth", 0) for n in nodes) < 3:
                await anyio.sleep(0.05)
