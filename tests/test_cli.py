"""The `hedgeplug` command: argument and configuration errors, plugin
listing, and status/send/broadcast against real `hedgeplug run` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from hedgeplug.cli import main
from hedgeplug.testing.processes import ProcessCluster

CLI_TIMEOUT = 60  # seconds for one command-line invocation on a busy machine


def hedgeplug(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command as a real process, the way a user would."""
    return subprocess.run(
        [sys.executable, "-m", "hedgeplug", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------ plugins


def test_plugins_table_lists_every_builtin_with_distribution_and_version(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind, name in [
        ("lock", "sqlite"),
        ("lock", "memory"),
        ("transport", "tcp"),
        ("membership", "heartbeat"),
        ("broadcast", "direct"),
    ]:
        line = next((ln for ln in out.splitlines() if ln.split()[:2] == [kind, name]), None)
        assert line is not None, f"{kind} {name} missing from:\n{out}"
        assert "hedgeplug" in line and "0.1.0" in line


def test_plugins_json_has_kind_name_distribution_version_and_failures(capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {(i["kind"], i["name"]) for i in data["implementations"]}
    assert {("lock", "sqlite"), ("transport", "tcp"), ("membership", "heartbeat")} <= names
    assert all(
        {"kind", "name", "distribution", "version"} <= set(i) for i in data["implementations"]
    )
    assert data["failures"] == []


def test_plugins_names_a_broken_distribution_and_keeps_the_rest(tmp_path):
    # A real (if tiny) installed distribution whose entry point fails to import.
    site = tmp_path / "site"
    dist_info = site / "hedgeplug_broken_demo-9.9.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hedgeplug-broken-demo\nVersion: 9.9\n"
    )
    (dist_info / "entry_points.txt").write_text("[hedgeplug]\nbroken = hedgeplug_broken_demo\n")
    (site / "hedgeplug_broken_demo.py").write_text(
        "raise RuntimeError('this plugin is broken on purpose')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = hedgeplug("plugins", env=env)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "failed to load" in result.stdout
    assert "hedgeplug-broken-demo" in result.stdout
    assert "broken on purpose" in result.stdout
    assert "sqlite" in result.stdout  # the working plugins are still listed


# ------------------------------------------------------------ configuration errors


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hedgeplug.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[lock]\nttl = "3s"\ntll = "3s"\n', ["[lock] tll", "unknown key"]),
        ('[lock]\nttl = "3 parsecs"\n', ["[lock] ttl", "duration"]),
        ('[lock]\nttl = "3s\n', ["not valid TOML"]),
        ('[transport]\nuse = "carrier-pigeon"\n', ["[transport] use", "carrier-pigeon", "tcp"]),
        ('[membership]\ninterval = "-1s"\n', ["[membership] interval"]),
        ('[nodes]\nid = "x"\n', ["[nodes]", "unknown section"]),
    ],
    ids=[
        "unknown-key",
        "bad-duration",
        "bad-toml",
        "unknown-plugin",
        "negative-interval",
        "bad-section",
    ],
)
def test_bad_config_file_exits_2_naming_file_and_key(tmp_path, capsys, toml, expected):
    path = write(tmp_path, toml)
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    for text in expected:
        assert text in err, err
    assert err.startswith("hedgeplug: error:")


def test_missing_config_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["run", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_bad_override_exits_2_naming_it(capsys):
    assert main(["run", "--set", "lock.ttl"]) == 2
    assert "lock.ttl" in capsys.readouterr().err
    assert main(["run", "--set", "lock.ttl=soon"]) == 2
    err = capsys.readouterr().err
    assert "lock.ttl" in err and "soon" in err


def test_config_error_in_a_real_process_has_no_traceback(tmp_path):
    path = write(tmp_path, '[lock]\nttl = "fast"\n')
    result = hedgeplug("run", "--config", str(path))
    no_traceback(result)
    assert result.returncode == 2
    assert "[lock] ttl" in result.stderr and str(path) in result.stderr


# ------------------------------------------------------------ argument errors


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], "--address"),
        (["status", "--address", "localhost"], "host:port"),
        (["status", "--address", "127.0.0.1:99999"], "65535"),
        (["status", "--address", "::1:80"], "brackets"),
        (["status", "--address", "127.0.0.1:1", "--timeout", "soon"], "duration"),
        (["run", "--log-level", "loud"], "--log-level"),
        (["run", "--bind", "nowhere"], "--bind"),
        (["demo", "--nodes", "0"], "at least 1"),
        (["frobnicate"], "invalid choice"),
        (["send", "--address", "127.0.0.1:1"], "PAYLOAD"),
        (["send", "--address", "127.0.0.1:1", "--json-payload", "{oops"], "not valid JSON"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err


def test_unreachable_node_exits_1_with_a_clear_message():
    port = free_port()  # nothing listens there now
    result = hedgeplug("status", "--address", f"127.0.0.1:{port}", "--timeout", "3s")
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr


# ------------------------------------------------------------ against real nodes


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("trio") as p:
        yield p


@pytest.fixture(scope="module")
def cluster(portal, tmp_path_factory) -> Iterator[ProcessCluster]:
    """Three real `hedgeplug run` processes sharing one sqlite lock file."""
    workdir = tmp_path_factory.mktemp("cli-cluster")
    c = ProcessCluster(
        workdir, cluster="cli-test", overrides=["lock.ttl=3s", "membership.interval=500ms"]
    )
    try:
        portal.call(c.start, 3)
        portal.call(c.wait_agreed, 30.0)
        yield c
    finally:
        portal.call(c.aclose)


def test_status_json_has_leader_token_and_members(cluster, portal):
    node = cluster.nodes[0]
    result = hedgeplug("status", "--address", node.address, "--cluster", "cli-test", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["id"] == node.id and status["address"] == node.address
    assert status["leader"]["id"] in {n.id for n in cluster.nodes}
    assert status["token"] >= 1
    assert isinstance(status["is_leader"], bool) and status["view_version"]
    assert {(m["id"], m["address"]) for m in status["members"]} == {
        (n.id, n.address) for n in cluster.nodes
    }


def test_status_table_is_readable(cluster):
    node = cluster.nodes[1]
    result = hedgeplug("status", "--address", node.address, "--cluster", "cli-test")
    assert result.returncode == 0, result.stderr
    assert "leader" in result.stdout and "token" in result.stdout
    for n in cluster.nodes:
        assert n.id in result.stdout and n.address in result.stdout


def test_send_reaches_the_leader_through_any_node(cluster, portal):
    statuses = portal.call(cluster.statuses)
    leader = cluster.leader_process(statuses)
    assert leader is not None
    follower = next(n for n in cluster.nodes if n is not leader)
    result = hedgeplug(
        "send", "--address", follower.address, "--cluster", "cli-test", "--json", "hello"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"node": leader.id, "payload": "hello"}


def test_broadcast_returns_every_members_reply(cluster):
    result = hedgeplug(
        "broadcast",
        "--address",
        cluster.nodes[2].address,
        "--cluster",
        "cli-test",
        "--json",
        "--json-payload",
        '{"n": 7}',
    )
    assert result.returncode == 0, result.stderr
    replies = json.loads(result.stdout)
    assert sorted(r["member"] for r in replies) == sorted(n.id for n in cluster.nodes)
    assert all(r["ok"] and r["payload"]["payload"] == {"n": 7} for r in replies)
    assert {r["payload"]["node"] for r in replies} == {n.id for n in cluster.nodes}
    table = hedgeplug(
        "broadcast", "--address", cluster.nodes[2].address, "--cluster", "cli-test", "hi"
    )
    assert table.returncode == 0 and "3 replies, 0 failed" in table.stdout


def test_wrong_cluster_name_is_refused_clearly(cluster):
    result = hedgeplug(
        "status", "--address", cluster.nodes[0].address, "--cluster", "other", "--timeout", "2s"
    )
    no_traceback(result)
    assert result.returncode == 1
    assert cluster.nodes[0].address in result.stderr


def test_run_logs_leader_and_members_and_stops_cleanly_on_sigint(portal, tmp_path):
    single = ProcessCluster(tmp_path, cluster="cli-single")
    try:
        (node,) = portal.call(single.start, 1)
        portal.call(single.wait_agreed, 30.0)
        portal.call(node.signal, signal.SIGINT)
        assert portal.call(single.wait_exit, node, 15.0) == 0, node.log_tail()
        log = node.log_path.read_text()
        assert f"leader: {node.id} at {node.address} token=" in log
        assert f"members: joined {node.id}@{node.address}" in log
        assert "stopping on SIGINT" in log and "stopped" in log
        assert "Traceback" not in log
    finally:
        portal.call(single.aclose)


# ------------------------------------------------------------ demo


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def test_demo_script_mode_measures_failover_and_cleans_up():
    result = hedgeplug(
        "demo",
        "--nodes",
        "3",
        "--ttl",
        "2s",
        "--interval",
        "500ms",
        "--duration",
        "9s",
        "--kill-leader-after",
        "1s",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["killed_leader"]["id"] not in report["final"]["live"]
    assert 0 < report["failover_s"] <= 2 + 3  # lease ttl + tolerance for a busy machine
    assert report["convergence_s"] >= report["failover_s"]
    assert report["final"]["agreed"] and report["final"]["token"] > report["killed_leader"]["token"]
    assert all(_gone(pid) for pid in report["pids"].values())


def test_demo_stops_every_child_on_ctrl_c():
    demo = subprocess.Popen(
        [sys.executable, "-m", "hedgeplug", "demo", "--nodes", "2", "--duration", "60s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = demo.stdout.readline()  # the first progress line: children are running
        assert "s " in first, demo.stderr.read()
        children = [  # any thread of the demo may have started them
            int(p)
            for task in Path(f"/proc/{demo.pid}/task").iterdir()
            for p in (task / "children").read_text().split()
        ]
        assert len(children) == 2
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        assert all(_gone(pid) for pid in children)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_status_reads_cluster_name_from_a_config_file(cluster, tmp_path):
    config = write(tmp_path, '[node]\ncluster = "cli-test"\n')
    result = hedgeplug("status", "--address", cluster.nodes[0].address, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert cluster.nodes[0].id in result.stdout


def test_a_key_the_cluster_does_not_use_is_refused_and_counted(cluster, portal):
    node = cluster.nodes[0]
    before = portal.call(cluster.status_of, node)
    result = hedgeplug(
        "status", "-a", node.address, "--cluster", "cli-test", "--key", "s3cret", "--timeout", "2s"
    )
    no_traceback(result)
    assert result.returncode == 1 and "wrong cluster name or key" in result.stderr
    after = portal.call(cluster.status_of, node)
    assert after["counters"].get("drop.sealed", 0) == before["counters"].get("drop.sealed", 0) + 1


def test_process_kit_reports_a_child_that_fails_to_start(portal, tmp_path):
    from hedgeplug.testing.processes import ProcessError

    # The parent reads its config fine; the child gets a bad setting of its own.
    broken = ProcessCluster(
        tmp_path, cluster="cli-broken", extra_args=["--set", "lock.ttl=whenever"]
    )
    try:
        with pytest.raises(ProcessError) as info:
            portal.call(broken.start, 1)
        message = str(info.value)
        assert "exited with status 2 before it listened" in message
        assert "lock.ttl" in message and "whenever" in message  # the child's own error, quoted
    finally:
        portal.call(broken.aclose)


def test_demo_live_table_in_a_terminal_kill_key_then_quit_key():
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child becomes the demo, attached to a pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "hedgeplug", "demo", "--nodes", "3"])
    screen = b""

    def read_until(text: bytes, limit: float) -> bool:
        nonlocal screen
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    screen += os.read(fd, 65536)
                except OSError:  # the demo exited and closed the terminal
                    return text in screen
            if text in screen:
                return True
        return False

    try:
        assert read_until(b"views agree: yes", 30), screen.decode(errors="replace")[-2000:]
        os.write(fd, b"k")
        assert read_until(b"after the SIGKILL", 30), screen.decode(errors="replace")[-2000:]
        frames = screen.split(b"\x1b[H\x1b[2J")
        last_frame = next(f for f in reversed(frames) if b"after the SIGKILL" in f).decode()
        assert "killed/stopped" in last_frame and "LEADER" in last_frame
        os.write(fd, b"q")
        read_until(b"never appears", 15)  # drain until the demo exits
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_demo_runs_a_gossip_cluster_too(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "demo", "--nodes", "3", "--membership", "gossip",
         "--duration", "6", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["final"]["agreed"] is True and len(figures["final"]["live"]) == 3


def test_children_of_a_killed_parent_stop_by_themselves(tmp_path) -> None:
    """A parent that dies without cleaning up (SIGKILL) leaves no node running."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, os, time
        env = dict(os.environ, HEDGEPLUG_DIE_WITH_PARENT=str(os.getpid()))
        child = subprocess.Popen(
            [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0",
             "--set", "lock.path={tmp_path / 'lock.db'}"],
            stdout=subprocess.PIPE, env=env)
        child.stdout.readline()
        print(child.pid, flush=True)
        time.sleep(60)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait(10)
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # A zombie (exited, not yet reaped by init) counts as gone.
        stat = Path(f"/proc/{child_pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        import time

        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the node outlived its killed parent")


def test_a_node_whose_parent_died_before_it_started_does_not_start(tmp_path) -> None:
    """The parent pid comes in the environment, so a parent gone even before
    the child's interpreter is up is noticed at once."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, os
        env = dict(os.environ, HEDGEPLUG_DIE_WITH_PARENT=str(os.getpid()))
        child = subprocess.Popen(
            [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0",
             "--set", "lock.path={tmp_path / 'lock.db'}"],
            stdout=open({str(tmp_path / 'child.out')!r}, "w"), env=env)
        print(child.pid, flush=True)
        os._exit(0)
    """))
    parent = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    child_pid = int(parent.stdout)
    for _ in range(300):  # up to 30 s: the child's interpreter start and imports
        if not _alive(child_pid):
            break
        import time

        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the node started although its parent was gone")
    assert "listening on" not in (tmp_path / "child.out").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) counts as gone
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


# Runs the real command and, at exit, writes every module it had loaded.
MODULES_PROBE = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from hedgeplug.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_imports_neither_the_simulator_nor_the_test_kit(tmp_path) -> None:
    out = tmp_path / "modules.json"
    process = subprocess.Popen(
        [sys.executable, "-c", MODULES_PROBE, str(out), "run", "--bind", "127.0.0.1:0",
         "--set", f"lock.path={tmp_path / 'lock.db'}"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("hedgeplug: listening on ")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    modules = set(json.loads(out.read_text()))
    assert {"hedgeplug.cli.run", "hedgeplug.node"} <= modules  # the probe sees the run path
    unwanted = sorted(m for m in modules if m.startswith(("hedgeplug.sim", "hedgeplug.testing")))
    assert not unwanted, unwanted
    others = {"hedgeplug.cli.demo", "hedgeplug.cli.bench", "hedgeplug.processes"}
    assert not modules & others, modules & others


def test_version_imports_no_command_module(tmp_path) -> None:
    out = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", MODULES_PROBE, str(out), "--version"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.startswith("hedgeplug "), result.stderr
    modules = set(json.loads(out.read_text()))
    assert "hedgeplug.cli" in modules
    assert not {m for m in modules if m.startswith("hedgeplug.cli.")}, modules


def test_a_flag_and_a_set_of_the_same_key_exit_2_naming_both(capsys) -> None:
    assert main(["run", "--bind", "127.0.0.1:0", "--set", "transport.bind=127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--bind" in err and "--set transport.bind" in err and "[transport] bind" in err
    assert main(["run", "--id", "a", "--set", "node.id=b"]) == 2
    err = capsys.readouterr().err
    assert "--id" in err and "--set node.id" in err
    assert main(["demo", "--duration", "1", "--ttl", "3s", "--set", "lock.ttl=5s"]) == 2
    err = capsys.readouterr().err
    assert "--ttl" in err and "--set lock.ttl" in err
    assert main(["sim", "leader-kill", "--ttl", "3s", "-o", "lock.ttl=5s"]) == 2
    err = capsys.readouterr().err
    assert "--ttl" in err and "-o lock.ttl" in err


def test_bind_on_a_transport_without_a_bind_option_names_the_flag(capsys) -> None:
    assert main(["run", "--bind", "127.0.0.1:0", "--set", "transport.use=memory"]) == 2
    err = capsys.readouterr().err
    assert "--bind [transport] bind: unknown key for transport 'memory'" in err, err
