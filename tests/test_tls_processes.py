"""Mutual TLS with real `hedgeplug run` processes: three members, each with its
own certificate from the cluster CA, elect a leader and carry sends; a node
with no certificate, or one from another CA, shares their lock store yet
cannot join their view nor send, and every member keeps running, the
refusals counted. Certificates are real ones, made here with `cryptography`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

import hedgeplug
from hedgeplug.errors import HedgeplugError
from hedgeplug.processes import ProcessCluster
from hedgeplug.transport.tcp.certificates import create_ca, issue_node

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # the nodes are child processes; the backend here only drives them

MEMBERS = ("n1", "n2", "n3")
OVERRIDES = ["lock.ttl=2s", "membership.interval=0.2s"]
WATCH_SECONDS = 1.5  # what an outsider gets to try, in membership intervals: ~7


def refused(status: dict) -> int:
    dropped = status["transport"]["dropped"]
    return int(dropped.get("tls-handshake-failed", 0))


@pytest.mark.parametrize("outsider", ["no certificate", "another CA"])
async def test_three_members_elect_and_send_and_an_outsider_gets_nowhere(tmp_path: Path, outsider) -> None:
    create_ca(tmp_path / "cluster")
    create_ca(tmp_path / "stranger", name="someone else's CA")
    files = {node: issue_node(tmp_path / "cluster", node) for node in MEMBERS}
    stranger = issue_node(tmp_path / "stranger", "n9")
    async with ProcessCluster(
        tmp_path, cluster="tls-cluster", overrides=[*OVERRIDES, *files["n1"].overrides()]
    ) as cluster:
        async with anyio.create_task_group() as tg:
            for node in MEMBERS:
                own = cluster.config.with_options(
                    "transport", tls_cert=files[node].cert, tls_key=files[node].key
                )
                tg.start_soon(lambda own=own: cluster.add(config=own))
        await cluster.wait_agreed(20.0)
        statuses = await cluster.statuses()
        leader = cluster.leader_process(statuses)
        assert leader is not None
        for node in cluster.live:  # every member reaches the leader over TLS
            reply = await cluster.client.send(node.address, {"from": node.address}, timeout=5)
            assert reply == {"node": leader.id, "payload": {"from": node.address}}

        # The command line reads the TLS files from --config like a node does.
        command = [sys.executable, "-m", "hedgeplug", "status", "-a", leader.address, "--json"]
        with_tls = await anyio.run_process(
            [*command, "--config", str(tmp_path / f"{leader.id}.toml")], check=False
        )
        assert with_tls.returncode == 0, with_tls.stderr.decode()
        assert json.loads(with_tls.stdout)["is_leader"] is True
        (tmp_path / "plain.toml").write_text('[node]\ncluster = "tls-cluster"\n')
        without = await anyio.run_process([*command, "--config", str(tmp_path / "plain.toml")], check=False)
        assert without.returncode == 1, without.stderr.decode()

        before = {node.id: refused(statuses[node.id] or {}) for node in cluster.live}
        config = cluster.config.with_node(id="outsider")
        if outsider == "no certificate":
            config = config.with_options("transport", tls_cert="", tls_key="", tls_ca="")
        else:
            config = config.with_options(
                "transport", tls_cert=stranger.cert, tls_key=stranger.key, tls_ca=stranger.ca
            )
        async with hedgeplug.open_node(config) as intruder:
            with anyio.fail_after(10):
                await intruder.wait_leader(5.0)  # it reads the shared lock store...
            with pytest.raises(HedgeplugError):
                await intruder.send(b"let me in", timeout=2.0)  # ...but cannot reach the leader
            await anyio.sleep(WATCH_SECONDS)
            assert {m.id for m in intruder.view.live} <= {"outsider"}
            statuses = await cluster.statuses()
        for node in cluster.live:
            status = statuses[node.id]
            assert status is not None, f"{node.id} stopped answering:\n{node.log_tail()}"
            assert "outsider" not in {m["id"] for m in status["members"]}
            assert node.running
        assert len(cluster.live) == 3
        # The members counted the refused handshakes (a stranger's client aborts
        # at the members' certificate, which the members see as a failed handshake).
        after = {node.id: refused(statuses[node.id] or {}) for node in cluster.live}
        assert sum(after.values()) > sum(before.values()), json.dumps(after)
        ok, why, _ = await cluster.agreed()
        assert ok, why
