"""`hedgeplug demo`: a local cluster of N `hedgeplug run` processes on
loopback over the embedded sqlite lock, with a live table.

In a terminal: `k` SIGKILLs the leader so you can watch the failover, `q`
stops every node gracefully. For scripts (`--json`, `--duration`, or no
terminal): runs for --duration seconds, optionally SIGKILLs the leader after
--kill-leader-after seconds, and reports failover and convergence times
measured by polling every node's status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from ..config import Config, Setting
from ..processes import NodeProcess, ProcessCluster, Status, agreement, cluster_config
from .common import UsageError, duration_type, positive_int, print_json, run_async, table

HELP = "run a local cluster of N node processes with a live table (k: kill leader, q: quit)"
REFRESH = 0.25  # seconds between table refreshes (about 4 per second)
MAX_NODES = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nodes", "-n", type=positive_int, default=5, help="processes to start (default 5)"
    )
    parser.add_argument("--ttl", type=duration_type, help="lease time to live (default 3s)")
    parser.add_argument(
        "--interval", type=duration_type, help="heartbeat interval (default 1s)"
    )
    parser.add_argument("--membership", help="membership strategy: heartbeat (default) or gossip")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config override for every node (repeatable)",
    )
    parser.add_argument(
        "--duration", type=duration_type, help="run this long without a terminal, then stop"
    )
    parser.add_argument(
        "--kill-leader-after",
        type=duration_type,
        metavar="S",
        help="(script mode) SIGKILL the leader this long after the cluster first agreed",
    )
    parser.add_argument(
        "--json", action="store_true", help="script mode; print the measurements as JSON"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (node logs, lock file)"
    )


class _Timeline:
    """What happened and when (seconds on the anyio clock since the demo started)."""

    def __init__(self) -> None:
        self.t0 = anyio.current_time()
        self.first_agreed: float | None = None
        self.killed: dict[str, Any] | None = None
        self.failover: float | None = None
        self.convergence: float | None = None
        self.message = "starting nodes"

    def now(self) -> float:
        return anyio.current_time() - self.t0

    def observe(self, cluster: ProcessCluster, statuses: dict[str, Status | None]) -> bool:
        ok, why = agreement(statuses, {n.id for n in cluster.live})
        now = self.now()
        if ok and self.first_agreed is None:
            self.first_agreed = now
            self.message = f"cluster agreed {now:.2f}s after start"
        if self.killed is not None:
            since = now - self.killed["at"]
            if self.failover is None and any(
                s and s.get("is_leader") and s.get("id") != self.killed["id"]
                for s in statuses.values()
            ):
                self.failover = since
                self.message = f"new leader {since:.2f}s after the SIGKILL of {self.killed['id']}"
            if ok and self.convergence is None and self.failover is not None:
                self.convergence = since
                self.message = (
                    f"failover {self.failover:.2f}s, all views agreed {since:.2f}s "
                    f"after the SIGKILL of {self.killed['id']}"
                )
        return ok

    def kill_leader(
        self, cluster: ProcessCluster, statuses: dict[str, Status | None]
    ) -> NodeProcess | None:
        leader = cluster.leader_process(statuses)
        if leader is None:
            self.message = "no leader to kill right now"
            return None
        token = (statuses.get(leader.id) or {}).get("token")
        cluster.kill(leader)
        self.killed = {"id": leader.id, "token": token, "at": self.now()}
        self.failover = self.convergence = None
        self.message = f"SIGKILLed leader {leader.id} (token {token}); waiting for a new leader"
        return leader


def render(
    cluster: ProcessCluster,
    statuses: dict[str, Status | None],
    timeline: _Timeline,
    args: argparse.Namespace,
) -> str:
    live_ids = {n.id for n in cluster.live}
    ok, why = agreement(statuses, live_ids)
    leader = cluster.leader_process(statuses)
    leader_status = statuses.get(leader.id) if leader else None
    rows = []
    for node in sorted(cluster.nodes, key=lambda n: (len(n.id), n.id)):
        s = statuses.get(node.id) if node.running else None
        if not node.running:
            rows.append([node.id, str(node.pid), node.address, "killed/stopped", "", "", "", ""])
        elif s is None:
            rows.append([node.id, str(node.pid), node.address, "no answer", "", "", "", ""])
        else:
            rows.append(
                [
                    node.id,
                    str(node.pid),
                    node.address,
                    "LEADER" if s.get("is_leader") else "follower",
                    str((s.get("leader") or {}).get("id", "-")),
                    str(s.get("token")),
                    str(len(s.get("members", []))),
                    str(s.get("view_digest")),
                ]
            )
    head = [
        f"hedgeplug demo: {len(live_ids)} live of {len(cluster.nodes)} nodes, "
        f"lease {cluster.config.election.ttl:g}s, {_strategy(cluster.config)}, "
        f"t={timeline.now():.1f}s",
        f"leader {leader.id if leader else 'none'}"
        + (f" token {leader_status.get('token')}" if leader_status else "")
        + f"   views agree: {'yes' if ok else 'no (' + why + ')'}",
        "",
        table(rows, ["ID", "PID", "ADDRESS", "ROLE", "SEES LEADER", "TOKEN", "VIEW", "DIGEST"]),
        "",
        timeline.message,
        "keys: k = SIGKILL the leader, q = quit (graceful stop)",
    ]
    return "\n".join(head)


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Single key presses without Enter, terminal restored afterwards."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _keys(fd: int) -> str:
    ready, _, _ = select.select([fd], [], [], 0)
    return os.read(fd, 32).decode(errors="ignore") if ready else ""


async def _interactive(
    cluster: ProcessCluster, args: argparse.Namespace, stop: anyio.Event
) -> None:
    timeline = _Timeline()
    await cluster.start(args.nodes)
    fd = sys.stdin.fileno()
    with _cbreak(fd):
        while not stop.is_set():
            statuses = await cluster.statuses()
            timeline.observe(cluster, statuses)
            sys.stdout.write("\x1b[H\x1b[2J" + render(cluster, statuses, timeline, args) + "\n")
            sys.stdout.flush()
            keys = _keys(fd).lower()
            if "q" in keys:
                break
            if "k" in keys:
                timeline.kill_leader(cluster, statuses)
            with anyio.move_on_after(REFRESH):
                await stop.wait()
    print("stopping all nodes gracefully ...", flush=True)


async def _scripted(
    cluster: ProcessCluster, args: argparse.Namespace, stop: anyio.Event
) -> dict[str, Any]:
    duration = args.duration if args.duration is not None else 15.0
    timeline = _Timeline()
    await cluster.start(args.nodes)
    started = timeline.now()
    poll = 0.05
    deadline = duration
    ok = False
    statuses: dict[str, Status | None] = {}
    while timeline.now() < deadline and not stop.is_set():
        statuses = await cluster.statuses()
        ok = timeline.observe(cluster, statuses)
        if (
            args.kill_leader_after is not None
            and timeline.killed is None
            and timeline.first_agreed is not None
            and timeline.now() >= timeline.first_agreed + args.kill_leader_after
        ):
            timeline.kill_leader(cluster, statuses)
        if not args.json:
            print(f"{timeline.now():6.2f}s  {timeline.message}", flush=True)
        await anyio.sleep(poll if timeline.killed and timeline.convergence is None else REFRESH)
    leader = cluster.leader_process(statuses)
    return {
        "nodes": args.nodes,
        "ttl_s": cluster.config.election.ttl,
        "interval_s": getattr(cluster.config.membership.options, "interval", None),
        "duration_s": round(timeline.now(), 3),
        "all_started_s": round(started, 3),
        "first_agreed_s": _round(timeline.first_agreed),
        "killed_leader": timeline.killed
        and {k: v for k, v in timeline.killed.items() if k != "at"},
        "killed_at_s": _round(timeline.killed["at"]) if timeline.killed else None,
        "failover_s": _round(timeline.failover),
        "convergence_s": _round(timeline.convergence),
        "final": {
            "agreed": ok,
            "leader": leader.id if leader else None,
            "token": (statuses.get(leader.id) or {}).get("token") if leader else None,
            "live": sorted(n.id for n in cluster.live),
        },
        "pids": {n.id: n.pid for n in cluster.nodes},
        "poll_interval_s": poll,
        "workdir": str(cluster.workdir) if args.keep else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _strategy(config: Config) -> str:
    interval = getattr(config.membership.options, "interval", None)
    if interval is not None:
        return f"{config.membership.use} {interval:g}s"
    return config.membership.use


def demo_config(args: argparse.Namespace, workdir: Path) -> Config:
    """Every child's configuration, read once: the demo's lease of 3s (the
    heartbeat's own interval is 1s), the environment, then --set and the
    typed flags; a flag and a --set of the same key is an error naming both."""
    settings: list[str | Setting] = list(args.set)
    flags = (("--ttl", "lock", "ttl"), ("--interval", "membership", "interval"),
             ("--membership", "membership", "use"))
    for flag, section, key in flags:
        value = getattr(args, flag[2:])
        if value is not None:
            settings.append(Setting(section, key, value, flag))
    return cluster_config(
        workdir, cluster="hedgeplug-demo", overrides=settings, defaults={"lock": {"ttl": 3.0}}
    )


async def _demo(
    args: argparse.Namespace, workdir: Path, interactive: bool
) -> dict[str, Any] | None:
    stop = anyio.Event()
    result: dict[str, Any] | None = None
    async with ProcessCluster(workdir, config=demo_config(args, workdir)) as cluster:
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:

                    async def on_signal() -> None:
                        async for _ in signals:
                            stop.set()
                            return

                    tg.start_soon(on_signal)
                    if interactive:
                        await _interactive(cluster, args, stop)
                    else:
                        result = await _scripted(cluster, args, stop)
                    tg.cancel_scope.cancel()
        except BaseException:
            cluster.kill_all_now()  # never leave children behind, whatever went wrong
            raise
    return result


def run(args: argparse.Namespace) -> int:
    if args.nodes > MAX_NODES:
        raise UsageError(f"--nodes {args.nodes}: at most {MAX_NODES} processes on one machine")
    if (args.ttl is not None and args.ttl <= 0) or (args.interval is not None and args.interval <= 0):
        raise UsageError("--ttl and --interval must be greater than zero")
    scripted = args.json or args.duration is not None or args.kill_leader_after is not None
    if not scripted and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the live table needs a terminal; use --duration S (and --json) in scripts"
        )
    workdir = Path(tempfile.mkdtemp(prefix="hedgeplug-demo-"))
    try:
        result = run_async(_demo, args, workdir, not scripted)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if result is not None:
        if args.json:
            print_json(result)
        else:
            print(
                f"failover {result['failover_s']}s, convergence {result['convergence_s']}s, "
                f"final leader {result['final']['leader']}",
                flush=True,
            )
    elif args.keep:
        print(f"logs and lock file kept in {workdir}", flush=True)
    return 0
