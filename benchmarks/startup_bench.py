"""Start-up cost of the `hedgeplug` command beside a bare interpreter.

    python benchmarks/startup_bench.py [--repeat 10]

Each row runs a command `--repeat` times and prints the median wall time
and the median CPU time (user + system of the child, which the machine's
other load disturbs less than wall time), and the same over the baseline
`python -c pass` measured in this run. The last row starts a real node
(`hedgeplug run` on a sqlite lock in a temporary folder) and times it until
it prints its "listening on" line: what each of a hundred nodes pays when
a deployment scales up.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(argv: list[str], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of running `argv` to completion."""
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0, t0 = _cpu(), time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - cpu0)
    return statistics.median(walls), statistics.median(cpus)


def time_node_start(repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds from spawning `hedgeplug run` to its ready line."""
    walls, cpus = [], []
    with tempfile.TemporaryDirectory(prefix="hedgeplug-startup-") as folder:
        for i in range(repeat):
            argv = [
                PY, "-m", "hedgeplug", "run", "--cluster", f"startup{i}", "--bind", "127.0.0.1:0",
                "--set", "lock.use=sqlite", "--set", f"lock.path={Path(folder) / 'lock.sqlite3'}",
                "--log-level", "warning",
            ]
            t0 = time.perf_counter()
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert child.stdout is not None
            line = child.stdout.readline()
            walls.append(time.perf_counter() - t0)
            ticks = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpus.append((int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK"))
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            if not line.startswith(b"hedgeplug: listening on "):
                raise SystemExit(f"node did not start: {line!r}")
    return statistics.median(walls), statistics.median(cpus)


def imported_modules(code: str) -> int:
    out = subprocess.run(
        [PY, "-c", code + "; import sys; print(len(sys.modules))"],
        check=True, capture_output=True, text=True,
    ).stdout
    return int(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    base_wall, base_cpu = time_command([PY, "-c", "pass"], args.repeat)
    rows = [
        ("python -c pass (baseline)", base_wall, base_cpu),
        ("hedgeplug --version", *time_command([PY, "-m", "hedgeplug", "--version"], args.repeat)),
        ("python -c 'import hedgeplug'", *time_command([PY, "-c", "import hedgeplug"], args.repeat)),
        ("hedgeplug run --help", *time_command([PY, "-m", "hedgeplug", "run", "--help"], args.repeat)),
        ("hedgeplug run: until listening", *time_node_start(args.repeat)),
    ]
    print(f"{'command':<34} {'wall ms':>8} {'x base':>7} {'cpu ms':>8} {'x base':>7}")
    for name, wall, cpu in rows:
        print(
            f"{name:<34} {wall * 1000:8.1f} {wall / base_wall:7.1f} "
            f"{cpu * 1000:8.1f} {cpu / max(base_cpu, 1e-3):7.1f}"
        )
    base = imported_modules("pass")
    print(f"\nmodules loaded: bare interpreter {base}, "
          f"`import hedgeplug` {imported_modules('import hedgeplug')}, "
          f"`--version` path {imported_modules('import hedgeplug.cli')}, "
          f"`run` path {imported_modules('import hedgeplug.cli.run, hedgeplug.registry as r; r.Registry.load()')}")


if __name__ == "__main__":
    main()
