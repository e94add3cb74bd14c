"""The lock contract suite against a real etcd server (Debian's etcd-server, 3.4).

ttl is 2 s: etcd grants at least 1.5 election timeouts (2 s by default) whatever
is asked. clock_slack is 0.6 s because etcd revokes expired leases in a loop
every 500 ms, so an expired key can linger that long after its lease ran out.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from hedgeplug.testing.lock_contract import (
    ConnectionLossContract,
    FingerprintedContract,
    LockBackendContract,
    RowStorageContract,
    StallContract,
    StoreOutageContract,
    WatchableContract,
)
from hedgeplug.testing.log_contract import FencedLogContract
from tcp_proxy import LoopbackProxy

from hedgeplug_etcd import EtcdLock, GatewayClient


def _opener(endpoints: list[str]):
    prefix = f"contract-{uuid.uuid4().hex}/"
    return lambda: EtcdLock(GatewayClient(endpoints, timeout=3.0), "lock", prefix)


class TestEtcdLock(
    LockBackendContract, WatchableContract, RowStorageContract, FencedLogContract, FingerprintedContract
):
    ttl = 2.0
    clock_slack = 0.6
    hammer_seconds = 10.0  # abandoned leases hold the lock for the 2 s minimum ttl

    @pytest.fixture
    def make_lock(self, etcd_server):
        return _opener(etcd_server.endpoints)


class _ProcessPause:
    """Stalls etcd for real by stopping its process (SIGSTOP) and resuming it (SIGCONT)."""

    def __init__(self, server) -> None:
        self.server = server

    def stall(self) -> None:
        os.kill(self.server.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.server.pid, signal.SIGCONT)


class TestEtcdOutage(StoreOutageContract, StallContract):
    ttl = 2.0
    call_bound = 5.0

    @pytest.fixture
    def own_etcd(self, server_factory):
        return server_factory.etcd()

    @pytest.fixture
    def make_lock(self, own_etcd):
        return _opener(own_etcd.endpoints)

    @pytest.fixture
    def store_control(self, own_etcd):
        return own_etcd

    @pytest.fixture
    def store_stall(self, own_etcd):
        pause = _ProcessPause(own_etcd)
        yield pause
        pause.resume()


class TestEtcdConnectionLoss(ConnectionLossContract):
    """Through a loopback proxy that holds traffic and then cuts the connections:
    a renewal in flight fails with StoreError and the next call reconnects."""

    ttl = 2.0
    call_bound = 5.0

    @pytest.fixture
    def proxy(self, etcd_server):
        port = int(etcd_server.endpoint.rsplit(":", 1)[1])
        proxy = LoopbackProxy(port)
        yield proxy
        proxy.close()

    @pytest.fixture
    def make_lock(self, proxy):
        return _opener([proxy.url])

    @pytest.fixture
    def store_stall(self, proxy):
        return proxy

    @pytest.fixture
    def connection_breaker(self, proxy):
        return proxy
