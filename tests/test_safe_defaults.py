"""Safe defaults for clusters that span hosts: a host-local lock refuses a
reachable address, Kubernetes Service variables do not stop a node, and
config values may take the pod's address from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import hedgeplug
from hedgeplug.config import load_config
from hedgeplug.errors import ConfigError


def sqlite_config(tmp_path, **lock: object) -> dict:
    return {
        # A key: these tests are about the host-local store, not the key rule.
        "node": {"id": "n1", "cluster": "safe", "stop_timeout": "1s", "key": "safe-defaults-test-key"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.sqlite"), "ttl": "1s", **lock},
        # Bound on loopback; advertised as an address other hosts would dial.
        "transport": {"use": "tcp", "bind": "127.0.0.1:0", "advertise": "192.0.2.10:0"},
    }


@pytest.mark.anyio
async def test_sqlite_lock_refuses_a_non_loopback_advertised_address(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"SQLite file .*192\.0\.2\.10:\d+.*shared_store = true"):
        async with hedgeplug.open_node(sqlite_config(tmp_path)):
            pass


@pytest.mark.anyio
async def test_shared_store_true_lets_it_start(tmp_path) -> None:
    async with hedgeplug.open_node(sqlite_config(tmp_path, shared_store=True)) as node:
        assert node.address.startswith("192.0.2.10:")
        lease = await node.wait_leader(5.0)
        assert lease.holder == "n1"


@pytest.mark.anyio
async def test_loopback_sqlite_node_starts_as_before(tmp_path) -> None:
    config = sqlite_config(tmp_path)
    del config["transport"]["advertise"]
    async with hedgeplug.open_node(config) as node:
        assert (await node.wait_leader(5.0)).holder == "n1"


def test_run_with_a_reachable_address_and_sqlite_exits_2_with_the_reason(tmp_path) -> None:
    env = {**os.environ, "HEDGEPLUG_LOCK_PATH": str(tmp_path / "l.sqlite")}
    result = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0",
         "--set", "transport.advertise=192.0.2.10:7946"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "advertises 192.0.2.10:7946" in result.stderr and "shared_store" in result.stderr


KUBERNETES_SERVICES = {
    # A Service named hedgeplug-node and one named hedgeplug-lock in the namespace.
    "HEDGEPLUG_NODE_SERVICE_HOST": "10.96.0.12",
    "HEDGEPLUG_NODE_SERVICE_PORT": "7946",
    "HEDGEPLUG_NODE_SERVICE_PORT_GOSSIP": "7946",
    "HEDGEPLUG_NODE_PORT": "tcp://10.96.0.12:7946",
    "HEDGEPLUG_NODE_PORT_7946_TCP": "tcp://10.96.0.12:7946",
    "HEDGEPLUG_NODE_PORT_7946_TCP_ADDR": "10.96.0.12",
    "HEDGEPLUG_NODE_PORT_7946_TCP_PORT": "7946",
    "HEDGEPLUG_NODE_PORT_7946_TCP_PROTO": "tcp",
    "HEDGEPLUG_LOCK_SERVICE_HOST": "10.96.0.13",
    "HEDGEPLUG_LOCK_PORT_5432_TCP": "tcp://10.96.0.13:5432",
}


def test_kubernetes_service_variables_are_ignored(caplog) -> None:
    caplog.set_level("DEBUG", logger="hedgeplug.config")
    config = load_config(env={**KUBERNETES_SERVICES, "HEDGEPLUG_LOCK_TTL": "2s"})
    assert config.election.ttl == 2.0  # real keys still apply
    assert "HEDGEPLUG_NODE_SERVICE_HOST: ignored" in caplog.text


def test_other_unknown_environment_keys_stay_errors() -> None:
    with pytest.raises(ConfigError, match="HEDGEPLUG_NODE_COLOUR: unknown key"):
        load_config(env={"HEDGEPLUG_NODE_COLOUR": "blue"})
    with pytest.raises(ConfigError, match="HEDGEPLUG_LOCK_TTL_SERVICE: unknown key"):
        load_config(env={"HEDGEPLUG_LOCK_TTL_SERVICE": "x"})


def test_run_starts_among_kubernetes_service_variables(tmp_path) -> None:
    env = {**os.environ, **KUBERNETES_SERVICES, "HEDGEPLUG_LOCK_PATH": str(tmp_path / "k.sqlite")}
    child = subprocess.Popen(
        [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("hedgeplug: listening on 127.0.0.1:"), child.stderr.read() if not line else line
    finally:
        child.terminate()
        child.wait(30)


def test_environment_references_in_config_values(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[node]\ncluster = "${CLUSTER:-fallback}"\nmeta = {zone = "${ZONE}"}\n'
        'key = "literal $${NOT_EXPANDED}"\n'
        '[transport]\nadvertise = "${POD_IP}:7946"\n'
    )
    config = load_config(path, env={"POD_IP": "10.1.2.3", "ZONE": "b"})
    assert str(config.transport.options.advertise) == "10.1.2.3:7946"
    assert config.node.cluster == "fallback" and config.node.meta == {"zone": "b"}
    assert config.node.key == "literal ${NOT_EXPANDED}"
    with pytest.raises(ConfigError, match=r"\[transport\] advertise: \$\{POD_IP\} is not set"):
        load_config(path, env={"ZONE": "b"})


def test_rendered_config_reads_back_equal_with_a_literal_reference(tmp_path) -> None:
    from hedgeplug.config import render_toml, to_data

    config = load_config(data={"node": {"key": "a$${b}"}, "health": {"listen": "127.0.0.1:0"}}, env={})
    path = tmp_path / "r.toml"
    path.write_text(render_toml(config))
    again = load_config(path, env={})
    assert again.node.key == "a${b}" and again.health == config.health
    assert load_config(data=to_data(config), env={}).node.key == "a${b}"


