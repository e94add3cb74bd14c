"""Keys on the command line, as a user meets them: `hedgeplug keygen`, a real
`hedgeplug run` process refusing to listen beyond loopback without a key, and
status/send/broadcast reading the key from the environment like `run` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedgeplug.keyring import ClusterKey

CLI_TIMEOUT = 60  # seconds for one invocation on a busy machine
READY = "hedgeplug: listening on "


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPLUG_")}
    env["HEDGEPLUG_DIE_WITH_PARENT"] = "1"
    env.update(extra)
    return env


def hedgeplug(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hedgeplug", *args],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_keygen_prints_a_key_on_stdout_and_its_id_on_stderr(tmp_path):
    first = hedgeplug("keygen", env=base_env())
    second = hedgeplug("keygen", env=base_env())
    assert first.returncode == second.returncode == 0
    key = first.stdout.strip()
    assert len(key) == 43 and first.stdout == key + "\n" and key != second.stdout.strip()
    assert f"key id {ClusterKey.from_secret(key).hex}" in first.stderr
    path = tmp_path / "keys"
    path.write_text(f"# new\n{second.stdout}{first.stdout}")
    ids = hedgeplug("keygen", "--ids", str(path), env=base_env())
    assert ids.stdout.splitlines() == [
        f"{ClusterKey.from_secret(second.stdout.strip()).hex}  primary",
        f"{ClusterKey.from_secret(key).hex}  accepted",
    ]
    missing = hedgeplug("keygen", "--ids", str(tmp_path / "nope"), env=base_env())
    no_traceback(missing)
    assert missing.returncode == 2 and "key file" in missing.stderr and "does not exist" in missing.stderr


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "[::]:0"])
def test_run_refuses_to_listen_on_all_interfaces_without_a_key(tmp_path, bind):
    result = hedgeplug(
        "run", "--bind", bind, "--set", f"lock.path={tmp_path / 'lock.db'}", env=base_env()
    )
    no_traceback(result)
    assert result.returncode == 2
    for hint in ("refusing to start", "hedgeplug keygen", "key_file", "insecure = true"):
        assert hint in result.stderr
    assert READY not in result.stdout


class RunningNode:
    """One `hedgeplug run` process; stopped with SIGTERM by the fixture."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hedgeplug", "run", "--cluster", "keys-cli",
             "--set", f"lock.path={tmp_path / 'lock.db'}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith(READY):
            self.stop()
            raise AssertionError(f"node did not start: {line!r} {self.stderr}")
        self.address = line[len(READY):].split()[0]
        self.stderr = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = self.proc.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()


@pytest.fixture
def key_file(tmp_path) -> str:
    path = tmp_path / "cluster.keys"
    keys = hedgeplug("keygen", env=base_env()).stdout
    path.write_text(f"# primary first\n{keys}")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def keyed_node(tmp_path, key_file) -> Iterator[RunningNode]:
    # Listening on every interface is allowed once a key is set.
    node = RunningNode(tmp_path, base_env(HEDGEPLUG_NODE_KEY_FILE=key_file), "--bind", "0.0.0.0:0")
    try:
        yield node
    finally:
        node.stop()


def test_client_commands_take_the_key_from_the_environment(keyed_node, key_file):
    env = base_env(HEDGEPLUG_NODE_KEY_FILE=key_file, HEDGEPLUG_NODE_CLUSTER="keys-cli")
    address = keyed_node.address
    status = hedgeplug("status", "-a", address, env=env)
    assert status.returncode == 0, status.stderr
    send = hedgeplug("send", "-a", address, "hello", env=env)
    assert send.returncode == 0 and "hello" in send.stdout, send.stderr
    broadcast = hedgeplug("broadcast", "-a", address, "hi", env=env)
    assert broadcast.returncode == 0 and "hi" in broadcast.stdout, broadcast.stderr
    key = Path(key_file).read_text().splitlines()[-1]
    single = hedgeplug("status", "-a", address, env={**env, "HEDGEPLUG_NODE_KEY": key,
                                                     "HEDGEPLUG_NODE_KEY_FILE": ""})
    assert single.returncode == 0, single.stderr
    for result in (status, send, broadcast, single):
        assert "visible to every user" not in result.stderr


def test_a_key_on_the_command_line_works_but_is_warned_about(keyed_node, key_file):
    key = Path(key_file).read_text().splitlines()[-1]
    result = hedgeplug(
        "status", "-a", keyed_node.address, "--cluster", "keys-cli", "--key", key, env=base_env()
    )
    assert result.returncode == 0, result.stderr
    assert "visible to every user of this machine (ps" in result.stderr
    assert "HEDGEPLUG_NODE_KEY_FILE" in result.stderr


def test_without_the_key_a_client_is_refused(keyed_node):
    result = hedgeplug(
        "status", "-a", keyed_node.address, "--cluster", "keys-cli", "--timeout", "2s",
        env=base_env(),
    )
    no_traceback(result)
    assert result.returncode == 1 and "wrong cluster name or key" in result.stderr


def test_run_with_a_key_in_set_warns(tmp_path):
    node = RunningNode(tmp_path, base_env(), "--set", "node.key=on-the-command-line")
    node.stop()
    assert "visible to every user of this machine" in node.stderr
