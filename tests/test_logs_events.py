"""Logs (JSON lines, node fields, repeated warnings held back), member
metadata updates as events and observer calls, and BlockingNode parity."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time

import anyio
import pytest

import hedgeplug
from hedgeplug import logs
from hedgeplug.events import MemberUpdated
from hedgeplug.hookspecs import hookimpl
from hedgeplug.registry import Registry


def record(msg: str, created: float, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    rec = logging.LogRecord("hedgeplug.election", level, __file__, 1, msg, args, None)
    rec.created = created
    return rec


def test_repeat_filter_holds_back_identical_warnings_and_counts_them() -> None:
    limit = logs.RepeatFilter(every=30)
    assert limit.filter(record("%s: lock store error: %s", 100.0, "n1", "down"))
    held = [limit.filter(record("%s: lock store error: %s", 100.0 + i, "n1", "x")) for i in range(1, 30)]
    assert not any(held)
    assert limit.filter(record("another warning", 101.0))  # another template passes
    assert limit.filter(record("debug line", 101.0, level=logging.DEBUG))
    after = record("%s: lock store error: %s", 131.0, "n1", "down")
    assert limit.filter(after)
    assert after.getMessage() == "n1: lock store error: down ... (repeated 29 times in 31s)"
    nxt = record("%s: lock store error: %s", 162.0, "n1", "down")
    assert limit.filter(nxt) and "repeated" not in nxt.getMessage()


def test_json_formatter_writes_one_object_per_line_with_extras_and_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %d", (3,), sys.exc_info())
    rec.node = "n1"
    out = json.loads(logs.JsonFormatter().format(rec))
    assert out["message"] == "failed 3" and out["level"] == "error" and out["node"] == "n1"
    assert "ValueError: boom" in out["exception"] and out["time"].endswith("+00:00")


def memory_config(name: str, node: str) -> dict:
    return {
        "node": {"id": node, "cluster": name, "stop_timeout": "1s"},
        "lock": {"use": "memory", "store": name, "ttl": "1s"},
        "transport": {"use": "memory", "network": name},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


def test_node_fields_come_from_the_node_whose_task_logged() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.NodeFields())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("hedgeplug")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)

    async def main() -> None:
        async with hedgeplug.open_node(memory_config("logs-a", "a1")) as a, \
                hedgeplug.open_node(memory_config("logs-b", "b1")) as b:
            await a.wait_leader(5)
            await b.wait_leader(5)
        logging.getLogger("hedgeplug.test").info("outside any node")

    try:
        anyio.run(main, backend="trio")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    won = {(ln["node"], ln["cluster"]) for ln in lines if "leader with token" in ln["message"]}
    assert won == {("a1", "logs-a"), ("b1", "logs-b")}
    assert all(ln["token"] >= 1 for ln in lines if "leader with token" in ln["message"])
    assert "node" not in next(ln for ln in lines if ln["message"] == "outside any node")


def test_run_logs_json_lines_with_node_fields(tmp_path) -> None:
    env = {**os.environ, "HEDGEPLUG_DIE_WITH_PARENT": str(os.getpid())}
    child = subprocess.Popen(
        [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0", "--id", "j1",
         "--log-format", "json", "--set", f"lock.path={tmp_path / 'l.sqlite'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        child.stdout.readline()
        lines = []
        for _ in range(50):
            line = child.stderr.readline()
            lines.append(json.loads(line))
            if "leader with token" in line:
                break
    finally:
        child.terminate()
        child.wait(30)
    won = lines[-1]
    assert won["node"] == "j1" and won["cluster"] == "hedgeplug" and won["logger"] == "hedgeplug.election"


def test_a_metadata_change_is_an_event_and_an_observer_call() -> None:
    calls: list[tuple[str, str, dict]] = []

    class Watcher:
        @hookimpl
        def hedgeplug_member_updated(self, node, member, previous) -> None:
            calls.append((node.id, member.id, member.metadata))

    registry = Registry.load(extra=[Watcher()])
    seen: list[MemberUpdated] = []

    async def main() -> None:
        async with hedgeplug.open_node(memory_config("meta", "m1"), registry=registry) as a, \
                hedgeplug.open_node(memory_config("meta", "m2"), registry=registry) as b:
            a.on_member_updated(seen.append)
            with anyio.fail_after(10):
                while len(a.view) < 2 or len(b.view) < 2:
                    await anyio.sleep(0.05)
            await b.set_meta({"zone": "b"})
            with anyio.fail_after(10):
                while not any(e.member.id == "m2" for e in seen):
                    await anyio.sleep(0.05)

    anyio.run(main, backend="trio")
    event = next(e for e in seen if e.member.id == "m2")
    assert event.member.metadata == {"zone": "b"} and event.previous.metadata == {}
    assert ("m1", "m2", {"zone": "b"}) in calls


def real_config(tmp_path, node: str) -> dict:
    # Each BlockingNode runs its own event loop: they meet over real sockets and a real store.
    return {
        "node": {"id": node, "cluster": "blocking", "stop_timeout": "1s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.sqlite"), "ttl": "1s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


def test_blocking_node_events_callbacks_meta_and_readiness(tmp_path) -> None:
    got: list[object] = []
    done = threading.Event()

    def slow_callback(event: object) -> None:
        got.append(event)  # runs in the event thread: may block without stalling the node
        done.set()

    first = hedgeplug.BlockingNode(real_config(tmp_path, "p1"))
    first.on_leader_changed(slow_callback)  # before start: sees the first leader
    updates: list[MemberUpdated] = []
    first.on_member_updated(updates.append)
    with first, hedgeplug.BlockingNode(real_config(tmp_path, "p2")) as second:
        second.wait_leader(10)
        assert done.wait(10) and got
        for _ in range(100):
            if len(first.view) == 2 and len(second.view) == 2:
                break
            threading.Event().wait(0.05)
        events = first.events(timeout=5)
        second.set_meta({"role": "worker"})
        event = next(e for e in events if isinstance(e, MemberUpdated))
        assert event.member.id == "p2" and event.member.metadata == {"role": "worker"}
        events.close()
        for _ in range(100):
            if updates:
                break
            threading.Event().wait(0.05)
        assert updates and updates[0].member.id == "p2"
        ready, body = first.ready()
        assert ready, body
        assert first.status()["ready"]["ready"]
    # A reader started before the node stops ends when it stops.
    node = hedgeplug.BlockingNode(real_config(tmp_path, "q1")).start()
    reader = node.events(timeout=30)
    stopper = threading.Timer(0.5, node.close)
    started = time.monotonic()
    stopper.start()
    list(reader)
    assert time.monotonic() - started < 20  # ended by the stop, not by its 30 s timeout
    stopper.join()


@pytest.fixture
def anyio_backend():
    return "trio"


def test_run_in_process_leaves_the_root_logger_as_it_found_it(tmp_path) -> None:
    from hedgeplug.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for _ in range(2):
        assert main(["run", "--set", "lock.ttl=soon", "--log-format", "json"]) == 2
    assert root.handlers == handlers and root.level == level
    with logs.configured("DEBUG", "json") as first:
        second = logs.configure("INFO", "text")  # configured again: replaces its own handler
        assert first not in root.handlers and second in root.handlers
        root.removeHandler(second)
    assert root.level == level
