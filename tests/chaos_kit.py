"""What the chaos tests share: a ProcessCluster of `chaos_worker.py`
processes (real nodes whose application records its fencing tokens), the
three lock stores, and the checker of those records.

The checker's claim, from the records alone: windows of leadership as the
application acted in them (first to last act with one token) never overlap
in host time, whoever held them, and tokens only grow from one holder to
the next. It also measures how long after a holder's own belief ended
(`until`) the next holder first acted: the election promises that gap is
positive whenever the lease was not released.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from hedgeplug.config import Config
from hedgeplug.testing.processes import (
    NodeProcess,
    ProcessCluster,
    ProcessError,
    Status,
    start_process,
    summarize,
)

WORKER = Path(__file__).with_name("chaos_worker.py")
STORES = ("sqlite", "postgres", "etcd")


# ------------------------------------------------------------------ processes


async def start_worker(
    prefix: Sequence[str], config: Path, record: Path, log_path: Path, *, ready_timeout: float,
    env: dict[str, str] | None = None,
) -> NodeProcess:
    """`PREFIX python chaos_worker.py --config CONFIG --record RECORD`, once it listens."""
    command = [*prefix, sys.executable, str(WORKER), "--config", str(config), "--record", str(record)]
    return await start_process(
        command, log_path, ready_timeout=ready_timeout, env=env, what="chaos worker"
    )


class WorkerCluster(ProcessCluster):
    """ProcessCluster whose members are chaos workers, each recording to `<id>.jsonl`."""

    def record_of(self, node_id: str) -> Path:
        return self.workdir / f"{node_id}.jsonl"

    async def add(self, ready_timeout: float = 60.0, config: Config | None = None) -> NodeProcess:
        self._count += 1
        node_id = f"n{self._count}"
        config_path = Path(self.args_for(node_id, config)[1])
        node = await start_worker(
            [], config_path, self.record_of(node_id), self.workdir / f"{node_id}.log",
            ready_timeout=ready_timeout,
        )
        self.nodes.append(node)
        return node

    def windows(self) -> list[Window]:
        return read_windows(self.workdir.glob("n*.jsonl"))


def store_overrides(store: str, server: Any) -> list[str]:
    """Settings that put the cluster's lock in `store` (`server`: a postgres/etcd handle)."""
    if store == "sqlite":
        return []  # ProcessCluster's default: the sqlite lock in the work folder
    if store == "postgres":
        return ["lock.use=postgres", f"lock.dsn={server.dsn}"]
    if store == "etcd":
        prefix = f"chaos-{uuid.uuid4().hex}/"
        return ["lock.use=etcd", f"lock.endpoints={','.join(server.endpoints)}", f"lock.prefix={prefix}"]
    raise ValueError(f"unknown store {store!r}")


class SqliteOutage:
    """The sqlite store 'stopped': another connection holds its write lock
    (BEGIN EXCLUSIVE) so no node can acquire or renew; `start` lets go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def stop(self) -> None:
        self.conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def start(self) -> None:
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


def leaders(statuses: dict[str, Status | None]) -> list[str]:
    return sorted(s["id"] for s in statuses.values() if s and s.get("is_leader"))


# ------------------------------------------------------------------ records


@attrs.frozen
class Window:
    """One stretch in which `node` acted as leader with `token`."""

    node: str
    token: int
    t_enter: float
    t_leave: float
    until: float  # the node's own belief ran out then (host clock)
    acts: int
    graceful: bool  # ended by a graceful stop (the lease was released, not lost)


def read_windows(paths: Iterable[Path]) -> list[Window]:
    """Every node's leadership windows from its record file, sorted by start."""
    windows: list[Window] = []
    for path in paths:
        open_: dict[str, Any] | None = None

        def close(graceful: bool) -> None:
            nonlocal open_
            if open_ is not None:
                windows.append(Window(**open_, graceful=graceful))
                open_ = None

        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec["e"] == "act":
                if open_ is not None and open_["token"] != rec["token"]:
                    close(False)
                if open_ is None:
                    open_ = {"node": rec["node"], "token": rec["token"], "t_enter": rec["t"],
                             "t_leave": rec["t"], "until": rec["until"], "acts": 0}
                open_.update(t_leave=rec["t"], until=max(open_["until"], rec["until"]))
                open_["acts"] += 1
            elif rec["e"] == "leave":
                close(False)
            elif rec["e"] == "stop":
                close(True)
        close(False)  # killed while leading: the window ends at its last act
    return sorted(windows, key=lambda w: w.t_enter)


@attrs.frozen
class Handovers:
    """What the records say about every change of holder."""

    windows: int
    holders: int  # changes of holder
    min_gap: float | None  # successor's first act minus predecessor's last act
    min_belief_gap: float | None  # successor's first act minus predecessor's belief end (lost leases)
    tokens: tuple[int, ...]

    def figures(self) -> dict[str, Any]:
        rounded = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in attrs.asdict(self).items()}
        rounded["tokens"] = f"{self.tokens[0]}..{self.tokens[-1]}" if self.tokens else "-"
        return rounded


def check_windows(windows: Sequence[Window]) -> Handovers:
    """Assert no two windows overlap in host time and tokens grow across
    holders; return the figures. Raises AssertionError naming the pair."""
    gaps: list[float] = []
    belief_gaps: list[float] = []
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.t_leave < after.t_enter, f"overlapping leadership: {before} and {after}"
        if before.node == after.node:
            assert after.token >= before.token, f"token went back on {before.node}: {before} {after}"
            continue
        assert after.token > before.token, f"token did not grow across holders: {before} {after}"
        gaps.append(after.t_enter - before.t_leave)
        if not before.graceful:
            belief_gaps.append(after.t_enter - before.until)
    return Handovers(
        windows=len(windows), holders=len(gaps),
        min_gap=min(gaps) if gaps else None,
        min_belief_gap=min(belief_gaps) if belief_gaps else None,
        tokens=tuple(w.token for w in windows),
    )


def acts_between(windows: Sequence[Window], start: float, end: float) -> list[Window]:
    """Windows with an act inside [start, end] (host clock)."""
    return [w for w in windows if w.t_leave >= start and w.t_enter <= end]


# ------------------------------------------------------------------ waiting


async def wait_among(
    cluster: ProcessCluster,
    nodes: Sequence[NodeProcess],
    condition: Callable[[dict[str, Status | None]], bool],
    timeout: float,
    what: str,
    poll: float = 0.05,
) -> tuple[float, dict[str, Status | None]]:
    """Poll only `nodes` until `condition` holds: (seconds it took, last statuses).
    Raises ProcessError with those statuses at `timeout`."""
    start = anyio.current_time()
    last: dict[str, Status | None] = {}
    with anyio.move_on_after(timeout):
        while True:
            last = await cluster.statuses(nodes)
            if condition(last):
                return anyio.current_time() - start, last
            await anyio.sleep(poll)
    raise ProcessError(f"{what} not reached within {timeout}s; last statuses:\n{summarize(last)}")


async def sample_leaders(
    cluster: ProcessCluster, nodes: Sequence[NodeProcess], seconds: float, poll: float = 0.1
) -> list[tuple[float, list[str]]]:
    """(host monotonic time of the poll, ids saying they lead) for `seconds`."""
    samples: list[tuple[float, list[str]]] = []
    with anyio.move_on_after(seconds):
        while True:
            t = time.monotonic()
            samples.append((t, leaders(await cluster.statuses(nodes))))
            await anyio.sleep(poll)
    return samples
