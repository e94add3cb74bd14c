"""Health: /livez and /readyz over real sockets, the ASGI app, the verdict,
and `hedgeplug status --ready` against a real node process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from typing import Any

import anyio
import pytest

import hedgeplug
from hedgeplug import health
from hedgeplug.lock.memory import get_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "trio"


def memory_config(name: str, **health_section: Any) -> dict:
    return {
        "node": {"id": "h1", "cluster": name, "stop_timeout": "1s"},
        "lock": {"use": "memory", "store": name, "ttl": "1s"},
        "transport": {"use": "memory", "network": name},
        "membership": {"use": "heartbeat", "interval": "200ms"},
        "health": {"listen": "127.0.0.1:0", **health_section},
    }


async def http(address: str, request: bytes) -> tuple[int, dict]:
    host, _, port = address.rpartition(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(request)
        received = b""
        with anyio.fail_after(5):
            while True:
                try:
                    received += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), (json.loads(body) if body else {})


async def get(address: str, path: str) -> tuple[int, dict]:
    return await http(address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def until_ready(node: hedgeplug.Node) -> None:
    with anyio.fail_after(10):
        while not health.verdict(node)[0]:
            await anyio.sleep(0.05)


async def test_endpoints_say_live_and_ready_and_refuse_bad_requests() -> None:
    async with hedgeplug.open_node(memory_config("health-ok")) as node:
        address = node.lifecycle.health_address
        await until_ready(node)
        status, body = await get(address, "/readyz")
        assert status == 200 and body["ready"] and body["leader"] == "h1" and body["token"] >= 1
        status, body = await get(address, "/livez?verbose=1")
        assert status == 200 and body["live"]
        assert (await get(address, "/no-such-path"))[0] == 404
        assert (await http(address, b"POST /readyz HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await http(address, b"hello there\r\n\r\n"))[0] == 400
        assert (await http(address, b"\xff\xfe /x HTTP/1.1\r\n\r\n"))[0] == 400
        assert (await http(address, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"))[0] == 431
        # After all that the endpoint still answers.
        assert (await get(address, "/readyz"))[0] == 200


async def test_a_silent_client_gets_408_and_does_not_block_others(monkeypatch) -> None:
    monkeypatch.setattr(health, "READ_TIMEOUT", 0.3)
    async with hedgeplug.open_node(memory_config("health-slow")) as node:
        address = node.lifecycle.health_address
        host, _, port = address.rpartition(":")
        async with await anyio.connect_tcp(host, int(port)) as silent:
            await silent.send(b"GET /readyz HTTP/1.1\r\n")  # never finishes its head
            assert (await get(address, "/livez"))[0] == 200
            with anyio.fail_after(5):
                answer = await silent.receive()
            assert answer.startswith(b"HTTP/1.1 408")


async def test_not_ready_while_the_store_is_down_and_says_why() -> None:
    get_store("health-down").set_down(True)
    try:
        async with hedgeplug.open_node(memory_config("health-down")) as node:
            await anyio.sleep(1.5)
            status, body = await get(node.lifecycle.health_address, "/readyz")
            assert status == 503 and not body["ready"]
            assert "no leader known" in body["reasons"]
            assert any("lock store has not answered" in r for r in body["reasons"])
            assert (await get(node.lifecycle.health_address, "/livez"))[0] == 200
            # The sender is always among a broadcast's receivers, even outside any view.
            replies = await node.broadcast_all("x", timeout=2)
            assert [r.member for r in replies] == ["h1"]
    finally:
        get_store("health-down").set_down(False)


async def test_ready_turns_false_once_the_store_is_silent_for_a_ttl() -> None:
    async with hedgeplug.open_node(memory_config("health-lapse")) as node:
        await until_ready(node)
        get_store("health-lapse").set_down(True)
        try:
            with anyio.fail_after(5):
                while health.verdict(node)[0]:
                    await anyio.sleep(0.05)
            ready, body = health.verdict(node)
            assert any("last answered" in r or "no leader" in r for r in body["reasons"])
        finally:
            get_store("health-lapse").set_down(False)
        await until_ready(node)


async def test_asgi_app_answers_like_the_endpoint() -> None:
    config = memory_config("health-asgi")
    del config["health"]
    async with hedgeplug.open_node(config) as node:
        assert node.lifecycle.health_address == ""
        await until_ready(node)
        app = health.asgi_app(node)
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": "/ops/readyz", "root_path": "/ops"},
                  receive, send)
        assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["ready"]
        sent.clear()
        await app({"type": "http", "method": "GET", "path": "/nope"}, receive, send)
        assert sent[0]["status"] == 404


async def test_a_busy_health_port_is_a_clear_error() -> None:
    async with hedgeplug.open_node(memory_config("health-busy")) as node:
        taken = node.lifecycle.health_address
        with pytest.raises(hedgeplug.HedgeplugError, match=f"listen {taken}: cannot listen"):
            async with hedgeplug.open_node(memory_config("health-busy2", listen=taken)):
                pass


def test_status_ready_is_a_probe_against_a_real_node(tmp_path) -> None:
    db = tmp_path / "lock.sqlite"
    env = {**os.environ, "HEDGEPLUG_DIE_WITH_PARENT": str(os.getpid())}
    child = subprocess.Popen(
        [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0",
         "--set", f"lock.path={db}", "--set", "lock.ttl=1s"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        address = child.stdout.readline().split()[3]

        def probe() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "hedgeplug", "status", "--ready", "-a", address],
                capture_output=True, text=True, timeout=60,
            )

        result = probe()
        for _ in range(20):
            if result.returncode == 0:
                break
            time.sleep(0.5)
            result = probe()
        assert result.returncode == 0 and ": ready:" in result.stdout, result
        # Another process holds the database's write lock: every call of the
        # node now fails after its busy timeout.
        blocker = sqlite3.connect(db, timeout=5)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            # The leader steps down first ("no leader known"); the store's
            # silence is a reason once it has lasted a ttl.
            for _ in range(20):
                result = probe()
                if result.returncode != 0 and "lock store" in result.stdout:
                    break
                time.sleep(0.5)
        finally:
            blocker.rollback()
            blocker.close()
        assert result.returncode == 3, result
        assert "NOT ready" in result.stdout and "lock store" in result.stdout
    finally:
        child.terminate()
        child.wait(30)
