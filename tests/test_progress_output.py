"""`bench` prints tables and plots its samples; `sim` and `bench` show a
progress line on a terminal's stderr, and none with --json or a pipe."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from hedgeplug.cli import main
from hedgeplug.cli.bench_output import format_figures
from hedgeplug.cli.progress import ProgressLine


def test_bench_figures_read_as_tables() -> None:
    text = format_figures({
        "scenario": "leader-kill", "size": 3, "convergence_s": None,
        "failover_s": {"count": 2, "median": 1.5, "p99": 2.0, "max": 2.0},
    })
    lines = text.splitlines()
    assert lines[0].split() == ["FIGURE", "VALUE"]
    assert lines[1].split() == ["scenario", "leader-kill"] and lines[3].split() == ["convergence_s", "-"]
    assert lines[5].split() == ["MEASURED", "COUNT", "MEDIAN", "P99", "MAX"]
    assert lines[6].split() == ["failover_s", "2", "1.5", "2", "2"]
    assert "{" not in text


def test_bench_leader_kill_prints_tables_and_a_plot(tmp_path, capsys) -> None:  # noqa: ANN001
    plot = tmp_path / "bench.png"
    code = main(["bench", "leader-kill", "--size", "3", "--rounds", "1", "--timeout", "40",
                 "--set", "lock.ttl=2s", "--plot", str(plot)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "MEASURED" in out.out and "failover_s" in out.out and "{" not in out.out
    assert plot.read_bytes().startswith(b"\x89PNG") and "plot written to" in out.err


def run_on_a_terminal(args: list[str], seconds: float = 120) -> tuple[int, str]:
    """Run `hedgeplug ARGS` with stderr on a pseudo-terminal; (exit status, what stderr showed)."""
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "hedgeplug", *args],
                             stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                shown += chunk
            elif child.poll() is not None:
                break
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        os.close(leader)
    return child.returncode, shown.decode(errors="replace")


def test_sim_shows_progress_on_a_terminal_only() -> None:
    args = ["sim", "churn", "-p", "size=20", "-p", "duration=400"]
    code, shown = run_on_a_terminal(args)
    assert code == 0
    assert "sim churn seed 1: t=" in shown and " nodes, leader " in shown
    code, shown = run_on_a_terminal([*args, "--json"])
    assert code == 0 and "t=" not in shown
    piped = subprocess.run([sys.executable, "-m", "hedgeplug", *args],
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "t=" not in piped.stderr


def test_progress_line_waits_before_showing_and_clears_itself() -> None:
    reads, writes = os.openpty()
    with os.fdopen(writes, "w") as stream:
        line = ProgressLine(after=3600, every=0.0, stream=stream)
        line.update("early")  # the run is younger than `after`: nothing
        line.after = 0.0
        line.update("later")
        line.done()
    # A pty hands written bytes to its reader asynchronously: read until
    # nothing more arrives (bounded), not just once.
    shown = ""
    while True:
        ready, _, _ = select.select([reads], [], [], 1.0)
        if not ready:
            break
        try:
            chunk = os.read(reads, 4096)
        except OSError:  # EIO: the writing side is closed and everything was read
            break
        if not chunk:
            break
        shown += chunk.decode()
    os.close(reads)
    assert "early" not in shown and "later" in shown and shown.endswith("\r")
