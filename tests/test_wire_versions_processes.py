"""A rolling upgrade with real `hedgeplug run` processes on loopback (sqlite
lock, heartbeat membership, sealed frames): one node pinned to the older wire
and control versions (as a node of the previous release speaks) and two of
this release elect one leader, agree on views and carry sends and broadcasts
both ways; the pinned node then comes back unpinned and every node moves to
the newest wire version without a restart, seen in `hedgeplug status`. The
command speaks both control versions and refuses others with a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import pytest

from hedgeplug.errors import RemoteError
from hedgeplug.testing.processes import ProcessCluster, Status, start_node, summarize
from hedgeplug.versions import CONTROL_VERSION_ENV, WIRE_VERSION_ENV

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

KEY = "wire-versions-test-key"
FAST = ["lock.ttl=2s", "membership.interval=300ms", f"node.key={KEY}"]
OLD = {"wire": 1, "wire_in_use": 1, "control": 1}
MIXED = {"wire": 2, "wire_in_use": 1, "control": 2}
NEW = {"wire": 2, "wire_in_use": 2, "control": 2}


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def protocols(statuses: dict[str, Status | None]) -> dict[str, object]:
    return {name: (s or {}).get("protocols") for name, s in statuses.items()}


def dropped_versions(statuses: dict[str, Status | None]) -> dict[str, int]:
    return {name: (s or {}).get("counters", {}).get("drop.version", 0) for name, s in statuses.items()}


async def messages_flow_both_ways(cluster: ProcessCluster) -> None:
    """Every node sends to the leader and broadcasts to all: the older node's
    frames reach the newer ones and theirs reach it."""
    everyone = sorted(n.id for n in cluster.live)
    for node in cluster.live:
        reply = await cluster.client.send(node.address, {"from": node.id}, timeout=5)
        assert reply["payload"] == {"from": node.id}
        answers = await cluster.client.broadcast(node.address, node.id, timeout=5)
        assert all(a["ok"] for a in answers), answers
        assert sorted(a["payload"]["node"] for a in answers) == everyone


def command(address: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "hedgeplug", "status", "-a", address, "--cluster", "wire-versions", "--json"],
        capture_output=True, text=True, timeout=30, env={**env, "HEDGEPLUG_NODE_KEY": KEY},
    )


async def test_a_pinned_node_and_current_ones_share_a_cluster_until_it_comes_back_upgraded(
    tmp_path, monkeypatch
) -> None:
    async with ProcessCluster(tmp_path, cluster="wire-versions", overrides=FAST) as cluster:
        monkeypatch.setenv(WIRE_VERSION_ENV, "1")
        monkeypatch.setenv(CONTROL_VERSION_ENV, "1")
        old = await cluster.add()  # started first: likely the leader, either way both directions run
        monkeypatch.delenv(WIRE_VERSION_ENV)
        monkeypatch.delenv(CONTROL_VERSION_ENV)
        await cluster.start(2)
        await cluster.wait_agreed(timeout=20)
        await cluster.wait_for(
            lambda s: protocols(s) == {"n1": OLD, "n2": MIXED, "n3": MIXED}, 10,
            describe="the newer nodes writing version 1 to a view holding the pinned node",
        )
        await messages_flow_both_ways(cluster)
        statuses = await cluster.statuses()
        assert dropped_versions(statuses) == {"n1": 0, "n2": 0, "n3": 0}, summarize(statuses)
        adverts = {m["id"]: m["meta"].get("hp.v") for m in statuses["n2"]["members"]}
        assert adverts == {"n1": "w1c1", "n2": "w2c2", "n3": "w2c2"}

        # The command of this release reads the pinned node's version-1 answer, and
        # a command pinned to control version 1 reads the newer nodes' answers.
        for node in cluster.live:
            done = command(node.address, {CONTROL_VERSION_ENV: "1"})
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["id"] == node.id
        refused = command(old.address, {CONTROL_VERSION_ENV: "3"})
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "HEDGEPLUG_CONTROL_VERSION='3': expected one of 1, 2" in refused.stderr
        newer = cluster.live[1]  # a node of this release, asked by a command of a newer one
        with pytest.raises(RemoteError, match=r"control protocol version 3 is newer than this node speaks \(1-2\)"):
            await cluster.client.call(newer.address, {"op": "status", "control": 3}, 3)

        # The rolling upgrade: the pinned node comes back as this release.
        assert await cluster.stop(old) == 0
        upgraded = await start_node(cluster.args_for("n1"), tmp_path / "n1-upgraded.log")
        cluster.nodes.append(upgraded)
        await cluster.wait_agreed(timeout=20)
        took = await cluster.wait_for(
            lambda s: protocols(s) == {"n1": NEW, "n2": NEW, "n3": NEW}, 10,
            describe="every node writing version 2",
        )
        print(f"\nall nodes on wire version 2 {took:.2f}s after the upgraded node agreed")
        await messages_flow_both_ways(cluster)
        statuses = await cluster.statuses()
        assert dropped_versions(statuses) == {"n1": 0, "n2": 0, "n3": 0}, summarize(statuses)
        # n2 and n3 moved up once (when the pinned node left), with no restart.
        assert [statuses[n]["counters"].get("wire.now-v2") for n in ("n2", "n3")] == [1, 1]
        assert statuses["n2"]["uptime"] > took
        with anyio.fail_after(5):
            assert (await cluster.client.status(upgraded.address))["protocols"] == NEW
