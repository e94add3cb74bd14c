"""`hedgeplug semaphore status` and the blocking facade, against a real node
(sqlite lock file, loopback tcp) run by BlockingNode in its own thread."""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time

import pytest

import hedgeplug
from hedgeplug.cli import semaphore as semaphore_cli
from hedgeplug.errors import RemoteError
from hedgeplug.state import (
    BlockingSemaphore,
    SlotLost,
    blocking_semaphore,
    close_semaphores,
)


def config(tmp_path, name: str) -> dict:
    return {
        "node": {"id": name, "cluster": "sem-cli", "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    semaphore_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def blocking(tmp_path):
    with hedgeplug.BlockingNode(config(tmp_path, "solo")) as node:
        portal = node._portal
        try:
            yield node
        finally:
            portal.call(close_semaphores, node._node)


def sem(node, name: str, limit: int) -> BlockingSemaphore:
    return blocking_semaphore(node, name, limit)


def test_status_shows_limit_holders_and_tokens(blocking, capsys):
    s = sem(blocking, "printers", 2)
    first = s.acquire(timeout=5)
    assert semaphore_cli.run(cli("status", "printers", "-a", blocking.address, "--cluster", "sem-cli")) == 0
    out = capsys.readouterr().out
    assert "semaphore printers: limit 2, 1 held, 1 free" in out
    assert "solo~" in out and str(first.token) in out
    assert semaphore_cli.run(
        cli("status", "printers", "-a", blocking.address, "--cluster", "sem-cli", "--json")
    ) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["limit"] == 2 and status["held"] == 1
    assert status["holders"][0]["token"] == first.token
    first.release()
    counters = blocking.status()["counters"]
    assert counters["semaphore.acquired"] == 1 and counters["semaphore.released"] == 1


def test_status_of_an_unknown_name_says_so(blocking):
    with pytest.raises(RemoteError, match="not known to the store"):
        semaphore_cli.run(cli("status", "nobody", "-a", blocking.address, "--cluster", "sem-cli"))


def test_status_needs_a_name_and_an_address(capsys):
    with pytest.raises(SystemExit):
        cli("status", "-a", "127.0.0.1:1")
    assert "NAME" in capsys.readouterr().err


def test_blocking_semaphore_from_threads_keeps_the_limit(blocking):
    s = sem(blocking, "threads", 2)
    inside = 0
    peak = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, peak
        try:
            for _ in range(3):
                with s as permit:
                    with lock:
                        inside += 1
                        peak = max(peak, inside)
                    assert permit.held
                    threading.Event().wait(0.05)
                    with lock:
                        inside -= 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and peak == 2
    assert s.try_acquire() is not None  # every slot was given back but one now taken
    assert s.try_acquire() is not None
    assert s.try_acquire() is None


def test_blocking_with_raises_slot_lost_when_the_slot_went_away(blocking, tmp_path):
    s = sem(blocking, "fragile", 1)
    with pytest.raises(SlotLost, match="lost during the block"):
        with s as permit:
            # The store ends the lease behind the holder's back (as an expiry would):
            # the next renewal is refused and the permit stops being held.
            with sqlite3.connect(tmp_path / "lock.db") as db:
                db.execute("UPDATE hedgeplug_lease SET expires = 0 WHERE name LIKE '%/sem/fragile/0'")
            deadline = time.monotonic() + 5
            while permit.held and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not permit.held
    assert blocking.status()["counters"]["semaphore.lost"] == 1
