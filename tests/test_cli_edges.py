"""The command's rough edges: what it says about a port where something
else answers, a node that never answers, and a wildcard bind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest


def hedgeplug(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hedgeplug", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[bool]]]:
    """A plain TCP server on loopback; `answer[0]` says whether it answers HTTP or stays silent."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    answer = [True]
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)
            if answer[0]:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock, answer
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        sock.close()


def test_status_against_a_web_server_says_it_is_not_a_hedgeplug_node(server) -> None:
    sock, _ = server
    result = hedgeplug("status", "-a", f"127.0.0.1:{sock.getsockname()[1]}", "--timeout", "3s")
    assert result.returncode == 1
    assert "is not a hedgeplug node" in result.stderr and "Traceback" not in result.stderr


def test_send_timeout_is_reported_as_given(server) -> None:
    sock, answer = server
    answer[0] = False  # accepts, never answers
    result = hedgeplug("send", "-a", f"127.0.0.1:{sock.getsockname()[1]}", "--timeout", "1s", "x")
    assert result.returncode == 1
    assert "within 1s (waited 3s, allowing for the round trip)" in result.stderr, result.stderr


def test_wildcard_bind_prints_where_it_listens_and_what_it_advertises(tmp_path) -> None:
    # A key: a keyless node refuses to listen on every interface.
    env = {**os.environ, "HEDGEPLUG_DIE_WITH_PARENT": str(os.getpid()), "HEDGEPLUG_NODE_KEY": "edges-test-key"}
    child = subprocess.Popen(
        [sys.executable, "-m", "hedgeplug", "run", "--bind", "0.0.0.0:0",
         "--set", f"lock.path={tmp_path / 'l.sqlite'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout is not None
    try:
        line = child.stdout.readline()
    finally:
        child.terminate()
        _, err = child.communicate(timeout=30)
    assert line.startswith("hedgeplug: listening on 127.0.0.1:"), line
    port = line.split()[3].rsplit(":", 1)[1]
    assert f" bound=0.0.0.0:{port}" in line
    assert f"listening on 0.0.0.0:{port}, advertised as 127.0.0.1:{port}" in err


def test_broadcast_that_no_member_answers_exits_1_with_a_message(tmp_path) -> None:
    import hedgeplug as hp

    config = {
        "node": {"id": "refuser", "cluster": "hedgeplug", "stop_timeout": "1s"},
        "lock": {"path": str(tmp_path / "l.sqlite"), "ttl": "1s"},
        "transport": {"bind": "127.0.0.1:0"},
    }
    with hp.BlockingNode(config) as node:
        def refuse(payload: object) -> None:
            raise RuntimeError("not taking broadcasts")

        node.on_broadcast(refuse)
        node.wait_leader(10)
        result = hedgeplug("broadcast", "-a", node.address, "--timeout", "2s", "hi")
    assert result.returncode == 1, result
    assert "1 replies, 1 failed" in result.stdout and "not taking broadcasts" in result.stdout
    assert "no member answered the broadcast" in result.stderr and "Traceback" not in result.stderr
