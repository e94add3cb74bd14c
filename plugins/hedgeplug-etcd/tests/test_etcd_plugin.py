"""etcd backend beyond the contract: auth, endpoint failover, clear errors,
configuration, and the core election reacting to a release through the watch."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import types
import urllib.request
import uuid

import anyio
import pytest
from hedgeplug.config import LockSettings, load_config
from hedgeplug.election import Election
from hedgeplug.errors import ConfigError, StoreError
from hedgeplug.testing.servers import free_port

from hedgeplug_etcd import EtcdLock, EtcdOptions, GatewayClient, lease_seconds, make, ssl_context
from hedgeplug_etcd.testing import make_test_certificates


def _lock(endpoints, prefix=None, **client_args) -> EtcdLock:
    prefix = prefix or f"plugin-{uuid.uuid4().hex}/"
    return EtcdLock(GatewayClient(endpoints, timeout=3.0, **client_args), "lock", prefix)


def _admin(endpoint: str, path: str, body: dict) -> None:
    request = urllib.request.Request(f"{endpoint}/v3/{path}", data=json.dumps(body).encode(),
                                     method="POST")
    urllib.request.urlopen(request, timeout=5).close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def etcd_with_auth(server_factory):
    """An own etcd with auth on: user `hp` may read and write under `app/` only."""
    etcd = server_factory.etcd()
    for path, body in [
        ("auth/user/add", {"name": "root", "password": "rootpw"}),
        ("auth/user/grant", {"user": "root", "role": "root"}),
        ("auth/user/add", {"name": "hp", "password": "hppw"}),
        ("auth/role/add", {"name": "hp"}),
        ("auth/role/grant", {"name": "hp", "perm": {
            "permType": "READWRITE", "key": _b64(b"app/"), "range_end": _b64(b"app0")}}),
        ("auth/user/grant", {"user": "hp", "role": "hp"}),
        ("auth/enable", {}),
    ]:
        _admin(etcd.endpoint, path, body)
    return etcd


@pytest.mark.anyio
async def test_auth_user_with_prefix_permission_can_lead(etcd_with_auth):
    lock = _lock(etcd_with_auth.endpoints, "app/", username="hp", password="hppw")
    try:
        lease = await lock.acquire("node-a", "addr-a", 2.0)
        assert lease is not None
        assert await lock.renew(lease, 2.0) is not None
        seen = await lock.current()
        assert seen is not None and seen.holder == "node-a"
        assert (await lock.row_put("r", b"v")).version == 1
        await lock.release(lease)
        assert await lock.current() is None
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_auth_errors_are_clear(etcd_with_auth):
    endpoint = etcd_with_auth.endpoint
    cases = [
        ({"username": "hp", "password": "wrong"}, "app/", "login as user 'hp' failed"),
        ({}, "app/", "set username and password"),
        ({"username": "hp", "password": "hppw"}, "elsewhere/", "permission on the key prefix"),
    ]
    for client_args, prefix, expected in cases:
        lock = _lock([endpoint], prefix, **client_args)
        try:
            with pytest.raises(StoreError, match=expected) as caught:
                await lock.acquire("node-a", "addr-a", 2.0)
            assert endpoint in str(caught.value)
        finally:
            await lock.aclose()


@pytest.mark.anyio
async def test_fails_over_to_the_next_endpoint(etcd_server):
    dead = f"http://127.0.0.1:{free_port()}"
    lock = _lock([dead, *etcd_server.endpoints])
    try:
        lease = await lock.acquire("node-a", "addr-a", 2.0)
        assert lease is not None
        assert lock.client.endpoint == etcd_server.endpoints[0]
        await lock.release(lease)
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_no_endpoint_reachable_names_each_one():
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    lock = _lock(dead)
    try:
        with pytest.raises(StoreError, match="no endpoint could be reached") as caught:
            await lock.current()
        for url in dead:
            assert url in str(caught.value)
    finally:
        await lock.aclose()


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = b"<html>nothing here</html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.anyio
async def test_an_endpoint_that_is_not_etcd_is_named():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    lock = _lock([url])
    try:
        with pytest.raises(StoreError, match="not JSON") as caught:
            await lock.current()
        assert url in str(caught.value) and "etcd v3 client URL" in str(caught.value)
    finally:
        await lock.aclose()
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_foreign_value_under_the_lock_key_is_reported(etcd_server):
    prefix = f"foreign-{uuid.uuid4().hex}/"
    _admin(etcd_server.endpoint, "kv/put", {"key": _b64(f"{prefix}lock/lock".encode()),
                                            "value": _b64(b"not json")})
    lock = _lock(etcd_server.endpoints, prefix)
    try:
        with pytest.raises(StoreError, match="not a hedgeplug lock record"):
            await lock.current()
    finally:
        await lock.aclose()


def test_lease_seconds_round_up_to_whole_seconds():
    assert [lease_seconds(t) for t in (0.2, 1.0, 1.01, 2.5, 3.0)] == [1, 1, 2, 3, 3]


@pytest.mark.anyio
async def test_short_ttl_gets_etcds_minimum_lease(etcd_server):
    lock = _lock(etcd_server.endpoints)
    try:
        lease = await lock.acquire("node-a", "addr-a", 0.5)
        assert lease is not None
        assert lease.ttl == 0.5 and lease.remaining >= 2.0  # etcd granted its 2 s minimum
    finally:
        await lock.aclose()


def test_config_selects_etcd_and_reports_bad_values(tmp_path):
    config = load_config(data={"lock": {"use": "etcd", "endpoints": ["http://127.0.0.1:2379"],
                                        "prefix": "svc/", "timeout": "2s"}}, env={})
    assert isinstance(config.lock.options, EtcdOptions)
    assert config.lock.options.timeout == 2.0
    bad = [
        ({"endpoints": ["127.0.0.1:2379"]}, "endpoints"),
        ({"endpoints": []}, "endpoints"),
        ({"cert_file": str(tmp_path / "missing.pem")}, "cert_file"),
        ({"password": "x"}, "username"),
        ({"timeout": "soon"}, "timeout"),
        ({"endpoint": "http://x"}, "unknown key"),
    ]
    for keys, expected in bad:
        with pytest.raises(ConfigError, match=expected):
            load_config(data={"lock": {"use": "etcd", **keys}}, env={})


def test_cert_without_key_is_a_config_error(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="'cert_file' and 'key_file' must be given together"):
        load_config(data={"lock": {"use": "etcd", "cert_file": str(cert)}}, env={})


@pytest.mark.anyio
async def test_election_takes_over_at_once_after_release(etcd_server):
    """With a 10 s poll period only the watch can explain a takeover within a second."""
    prefix = f"election-{uuid.uuid4().hex}/"
    settings = LockSettings(use="etcd", ttl=3.0, retry=10.0)
    changes: list[tuple[str, str | None]] = []
    locks = [_lock(etcd_server.endpoints, prefix) for _ in range(2)]
    elections = [
        Election(lock, settings, holder=f"node-{i}", address=lambda i=i: f"addr-{i}",
                 now=anyio.current_time,
                 on_change=lambda new, old, i=i: changes.append((f"node-{i}", new and new.holder)))
        for i, lock in enumerate(locks)
    ]
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for election in elections:
                    tg.start_soon(election.run)
                while not any(e.is_leader for e in elections):
                    await anyio.sleep(0.05)
                leader = next(e for e in elections if e.is_leader)
                follower = next(e for e in elections if e is not leader)
                await anyio.sleep(0.5)  # the follower is now waiting out its 10 s poll
                released_at = anyio.current_time()
                await leader.release(timeout=3.0)
                while not follower.is_leader:
                    await anyio.sleep(0.02)
                took = anyio.current_time() - released_at
                tg.cancel_scope.cancel()
        assert took < 1.0, f"takeover after release took {took:.2f}s"
        assert follower.lease is not None and follower.lease.holder == follower.holder
    finally:
        for lock in locks:
            await lock.aclose()


@pytest.fixture
def etcd_with_tls(server_factory):
    """An own etcd serving https with a throwaway CA and demanding client certificates."""
    return server_factory.etcd(tls=True)


def _tls_options(server, **changes) -> EtcdOptions:
    tls = server.certificates
    keys = {"endpoints": server.endpoints, "ca_file": tls.ca_file,
            "cert_file": tls.client_cert_file, "key_file": tls.client_key_file,
            "prefix": f"tls-{uuid.uuid4().hex}/"}
    keys.update(changes)
    return EtcdOptions(**keys)


@pytest.mark.anyio
async def test_mutual_tls_works_through_the_plugin_factory(etcd_with_tls):
    context = types.SimpleNamespace(lock_name="svc")  # make() reads only the lock name
    lock = make(_tls_options(etcd_with_tls), context)
    try:
        lease = await lock.acquire("node-a", "addr-a", 2.0)
        assert lease is not None and lease.lock == "svc"
        assert await lock.renew(lease, 2.0) is not None
        await lock.release(lease)
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_tls_mistakes_are_store_errors_naming_the_endpoint(etcd_with_tls, tmp_path):
    context = types.SimpleNamespace(lock_name="svc")
    other_ca = make_test_certificates(tmp_path / "other").ca_file
    mistakes = [
        _tls_options(etcd_with_tls, ca_file=other_ca),  # server cert not trusted
        _tls_options(etcd_with_tls, cert_file=None, key_file=None),  # no client cert
    ]
    for options in mistakes:
        lock = make(options, context)
        try:
            with pytest.raises(StoreError) as caught:
                await lock.current()
            assert etcd_with_tls.endpoint in str(caught.value)
        finally:
            await lock.aclose()


def test_unreadable_tls_files_are_config_errors(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        ssl_context(EtcdOptions(ca_file=str(junk)))
