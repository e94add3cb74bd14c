"""The throwaway test servers themselves: real processes on loopback, restartable in place."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import psycopg
import pytest

from hedgeplug.testing import servers
from hedgeplug_etcd.testing import ETCD_ENDPOINTS_ENV, ExternalEtcd, find_etcd, start_etcd
from hedgeplug_spanner.testing import SPANNER_EMULATOR_HOST_ENV


def _etcd_get(endpoint: str, key: bytes) -> dict:
    import base64

    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    request = urllib.request.Request(f"{endpoint}/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _etcd_put(endpoint: str, key: bytes, value: bytes) -> None:
    import base64

    body = json.dumps({"key": base64.b64encode(key).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    request = urllib.request.Request(f"{endpoint}/v3/kv/put", data=body, method="POST")
    urllib.request.urlopen(request, timeout=5).close()


def test_postgres_keeps_data_and_port_across_restart(server_factory):
    pg = server_factory.postgres()
    assert pg.host == "127.0.0.1"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("create table t (v int)")
        conn.execute("insert into t values (7)")
    port = pg.port
    pg.restart()
    assert pg.port == port
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("select v from t").fetchone() == (7,)


def test_postgres_refuses_wrong_password(postgres_server):
    bad = postgres_server.dsn.replace("postgres:", "postgres:wrong", 1)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(bad, connect_timeout=5)


def test_stopped_postgres_refuses_connections(server_factory):
    pg = server_factory.postgres()
    pg.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn, connect_timeout=2)
    pg.start()
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_etcd_keeps_data_across_kill_and_start(server_factory):
    etcd = server_factory.etcd()
    _etcd_put(etcd.endpoint, b"k", b"v")
    etcd.kill()
    with pytest.raises(OSError):
        _etcd_get(etcd.endpoint, b"k")
    etcd.start()
    assert _etcd_get(etcd.endpoint, b"k")["kvs"][0]["value"] == "dg=="


def test_session_servers_answer(etcd_server, spanner_emulator):
    assert _etcd_get(etcd_server.endpoints[0], b"absent").get("count") in (None, "0")
    host, port = spanner_emulator.host.rsplit(":", 1)
    assert host == "127.0.0.1"
    import socket

    socket.create_connection((host, int(port)), timeout=5).close()


def test_external_server_cannot_be_stopped(monkeypatch):
    given = ExternalEtcd("http://127.0.0.1:1, http://127.0.0.1:2")
    assert given.endpoints == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert given.owned is False


def test_up_and_down_from_the_command_line(tmp_path):
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "hedgeplug.testing.servers"]
    up = subprocess.run([*cmd, "up", "--state", str(state), "--only", "etcd,spanner"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    env = dict(line.split("=", 1) for line in (state / "servers.env").read_text().split())
    assert set(env) == {ETCD_ENDPOINTS_ENV, SPANNER_EMULATOR_HOST_ENV}
    assert up.stdout.split() == (state / "servers.env").read_text().split()
    entries = json.loads((state / "state.json").read_text())
    try:
        # The servers outlived the `up` process.
        assert _etcd_get(env[ETCD_ENDPOINTS_ENV], b"x").get("count") in (None, "0")
        again = subprocess.run([*cmd, "up", "--state", str(state)], capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 2 and "down" in again.stderr
    finally:
        down = subprocess.run([*cmd, "down", "--state", str(state)], capture_output=True,
                              text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    for entry in entries:
        assert not servers.pid_alive(entry["pid"])
    assert not (state / "state.json").exists()


def test_unknown_server_name_is_a_clear_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "hedgeplug.testing.servers", "up", "--state",
                          str(tmp_path), "--only", "mysql"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert "unknown server(s) mysql" in run.stderr


def test_server_started_from_a_worker_thread_outlives_the_thread():
    import threading
    import time

    started: list[servers.ServerHandle] = []
    worker = threading.Thread(target=lambda: started.append(start_etcd()))
    worker.start()
    worker.join(timeout=60)
    (etcd,) = started
    try:
        time.sleep(0.5)  # a parent-death signal tied to the finished thread would fire by now
        assert etcd.running and etcd.ready()
    finally:
        etcd.cleanup()
    assert not etcd.running


def test_https_etcd_demands_a_client_certificate(server_factory):
    import ssl

    etcd = server_factory.etcd(tls=True)
    assert etcd.endpoint.startswith("https://127.0.0.1:")
    trusted_only = ssl.create_default_context(cafile=etcd.certificates.ca_file)
    with pytest.raises((OSError, ssl.SSLError)):
        urllib.request.urlopen(f"{etcd.endpoint}/health", timeout=5, context=trusted_only).read()
    assert etcd.ready()  # with the client certificate


def test_missing_binary_says_how_to_install(monkeypatch):
    import os

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    with pytest.raises(servers.ServerError, match="apt-get install -y etcd-server"):
        find_etcd()


def test_launchers_come_from_the_plugin_distributions():
    found = servers.launchers()
    assert {"postgres", "etcd", "spanner"} <= set(found)
    assert found["etcd"].dist is not None and found["etcd"].dist.name == "hedgeplug-etcd"
    with pytest.raises(servers.ServerError, match="no test server named 'mysql'"):
        servers.launcher("mysql")


def test_core_testing_kit_names_no_server():
    import ast
    from pathlib import Path

    import hedgeplug.testing

    kit = Path(hedgeplug.testing.__file__).parent
    for path in [kit / f"{m}.py" for m in ("supervise", "servers", "pytest_plugin")]:
        source = path.read_text()
        docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
        code = source.replace(docstring, "", 1).lower()  # the docstring may show examples
        for name in ("postgres", "etcd", "spanner"):
            assert name not in code, f"{path.name} names {name}"


def test_percentile_is_a_measured_value_by_nearest_rank():
    from hedgeplug.stats import percentile

    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0 and percentile(values, 0.0) == 1.0
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="0..1"):
        percentile(values, 50)  # a percent, not a fraction


def test_measure_is_bounded_by_count_and_by_time():
    import anyio

    from hedgeplug.testing.timing import measure

    async def quick(watch):
        with watch.timing("op"):
            await anyio.sleep(0)

    async def slow(watch):
        with watch.timing("op"):
            await anyio.sleep(0.05)

    async def main():
        counted = await measure(quick, count=7, seconds=10.0, warmup=2)
        timed = await measure(slow, count=10_000, seconds=0.3, warmup=0)
        return counted, timed

    counted, timed = anyio.run(main, backend="trio")
    assert len(counted["op"]) == 7
    assert 1 <= len(timed["op"]) <= 7 and all(t >= 0.05 for t in timed["op"])
