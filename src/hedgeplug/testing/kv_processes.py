"""The key/value log across real node processes, against any lock store.

`run_kv_faults(cluster, ...)` starts `nodes` `hedgeplug run` processes and
writes and reads through every one of them (the control operations kv.put and
kv.get, as `hedgeplug kv` does) while it SIGKILLs the leader twice and then
SIGSTOPs the next one for longer than its lease. (On sqlite a process
stopped inside its write transaction keeps the file locked, so nobody can
take over: such a stop is undone and tried again, up to three times, and
counted in `blocked_stops`.) While that leader is
stopped, after its successor has written, the test writes to the store with
the stopped leader's token itself (what that leader would send on waking):
the store must refuse it. Then it SIGCONTs the stopped leader, stops the
traffic, reads the whole log from the store and checks it with the kv
checks (hedgeplug.sim.kv_checks): every acknowledged write is there, tokens
never go back in revision order (so nothing the stopped leader sent after
its successor's first write was accepted), reads never go back per node,
and per key the history is linearizable.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import attrs

from ..contracts import FencedLog, LogEntry
from ..errors import StoreError
from ..processes import NodeProcess, ProcessCluster, ProcessError
from ..sim.kv_checks import (
    GetOp,
    KvHistory,
    PutOp,
    lost_write,
    not_linearizable,
    read_went_back,
    tokens_go_back,
)
from ..state.kv_leader import entry_from_wire

STOP_ATTEMPTS = 3


@attrs.frozen
class KvRun:
    """What `run_kv_faults` saw; `problems` is empty when every check passed."""

    acked: int
    failed: int
    reads: int
    entries: int
    leaders: list[str]
    frozen_token: int
    successor_first_revision: int
    stale_probe_refused: bool
    fenced_on_wake: int
    blocked_stops: int  # stops that caught the leader inside a store write lock (retried)
    problems: list[str]

    def __str__(self) -> str:
        return (f"{self.acked} writes acknowledged, {self.failed} failed or timed out, "
                f"{self.reads} reads, {self.entries} entries in the store; leaders "
                f"{' -> '.join(self.leaders)}; stale write with token {self.frozen_token} "
                f"{'refused' if self.stale_probe_refused else 'ACCEPTED'}; the woken leader's "
                f"own refused appends: {self.fenced_on_wake}; stops retried because the stopped "
                f"leader held the store's write lock: {self.blocked_stops}; problems: {self.problems or 'none'}")


class _Standalone:
    """The little of a node context a lock factory reads."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.id = "kv-checker"
        self.cluster = cluster.config.node.cluster
        self.lock_name = cluster.config.node.lock


def open_store(cluster: ProcessCluster) -> Any:
    """The cluster's lock backend, opened in this process (to read the log)."""
    impl = cluster.registry.get("lock", cluster.config.lock.use)
    backend = impl.create(cluster.config.lock.options, _Standalone(cluster))
    if not isinstance(backend, FencedLog):
        raise ProcessError(f"lock {cluster.config.lock.use!r} offers no key/value log")
    return backend


async def read_whole_log(backend: Any) -> list[LogEntry]:
    entries: list[LogEntry] = []
    for _ in range(10_000):
        batch = await backend.log_since(entries[-1].revision if entries else 0, "", 1000)
        entries += batch
        if len(batch) < 1000:
            return entries
    raise ProcessError("the log did not end within 10 million entries")


async def _append_retrying(backend: Any, token: int) -> LogEntry | None:
    """The stale write; retried on store errors (the Spanner emulator drops a
    read-write transaction that collides with another)."""
    for attempt in range(5):
        try:
            return await backend.log_append(token, "probe/stale", b"from the stopped leader")  # type: ignore[no-any-return]
        except StoreError:
            if attempt == 4:
                raise
            await anyio.sleep(0.2)
    raise AssertionError("unreachable")


async def run_kv_faults(
    cluster: ProcessCluster, *, nodes: int = 5, keys: int = 4, phase: float = 2.0,
    start_timeout: float = 60.0,
) -> KvRun:
    ttl = cluster.config.election.ttl
    await cluster.start(nodes, ready_timeout=start_timeout)
    await cluster.wait_agreed(timeout=start_timeout)
    history = KvHistory()
    stop = anyio.Event()
    stopped: set[str] = set()
    put_timeout = 3 * ttl + 3.0
    now = anyio.current_time

    def through(i: int) -> NodeProcess | None:
        live = sorted((n for n in cluster.live if n.id not in stopped), key=lambda n: n.id)
        return live[i % len(live)] if live else None

    async def writer(i: int) -> None:
        n = 0
        while not stop.is_set():
            node = through(i + n)
            if node is None:
                await anyio.sleep(0.05)
                continue
            key, value = f"k{(i + n) % keys}", f"w{i}-{n}".encode()
            n += 1
            invoked = now()
            entry = None
            try:
                reply = await cluster.client.call(node.address, {
                    "op": "kv.put", "key": key, "value": value, "timeout": put_timeout,
                }, put_timeout + 2)
                entry = entry_from_wire(reply)
            except Exception:
                pass  # unknown outcome: not acknowledged
            history.puts.append(PutOp(node.id, key, value, invoked, now() if entry else None, entry))
            await anyio.sleep(0.02)

    async def reader(i: int) -> None:
        n = 0
        while not stop.is_set():
            node = through(i + n)
            n += 1
            if node is not None:
                key, invoked = f"k{n % keys}", now()
                try:
                    reply = await cluster.client.call(node.address, {"op": "kv.get", "key": key}, 1.0)
                    entry = None if reply is None else entry_from_wire(reply)
                    history.gets.append(GetOp(node.id, key, invoked, now(), entry))
                except Exception:
                    pass
            await anyio.sleep(0.02)

    async def leader_now() -> tuple[NodeProcess, int]:
        # Bounded wait: a store that is slow under the write load can make a
        # leader step down and another take over right after a failover.
        with anyio.move_on_after(ttl + 15):
            while True:
                statuses = await cluster.statuses()
                leader = cluster.leader_process(statuses)
                if leader is not None and leader.id not in stopped:
                    return leader, int((statuses[leader.id] or {}).get("token", 0))
                await anyio.sleep(0.05)
        raise ProcessError(f"no process reported leading within {ttl + 15:g}s")

    backend = open_store(cluster)
    leaders: list[str] = []
    blocked_stops = 0
    try:
        async with anyio.create_task_group() as tg:
            for i in range(nodes):
                tg.start_soon(writer, i)
            for i in range(2):
                tg.start_soon(reader, i)
            await anyio.sleep(phase)
            for _ in range(2):
                leader, _token = await leader_now()
                leaders.append(leader.id)
                cluster.kill(leader)
                await cluster.wait_new_leader(leader.id, timeout=ttl + 15)
                await anyio.sleep(phase)
            probe: LogEntry | None = None
            for _attempt in range(STOP_ATTEMPTS):
                frozen, frozen_token = await leader_now()
                stopped.add(frozen.id)
                os.kill(frozen.pid, signal.SIGSTOP)
                try:
                    try:
                        await cluster.wait_new_leader(frozen.id, timeout=ttl + 10)
                    except ProcessError:
                        # A one-file store (sqlite) stays locked while a process is
                        # stopped inside its write transaction: nobody can take over.
                        blocked_stops += 1
                        continue
                    successor, _ = await leader_now()
                    leaders += [frozen.id, successor.id]
                    await anyio.sleep(ttl + phase)  # well past the stopped leader's lease
                    probe = await _append_retrying(backend, frozen_token)
                    break
                finally:
                    os.kill(frozen.pid, signal.SIGCONT)
                    stopped.discard(frozen.id)
                    await anyio.sleep(phase)
            else:
                raise ProcessError(f"every one of {STOP_ATTEMPTS} stopped leaders blocked the store")
            stop.set()
        woken = (await cluster.statuses()).get(frozen.id) or {}
        entries = await read_whole_log(backend)
    finally:
        with anyio.CancelScope(shield=True):
            await backend.aclose()
    after = [e for e in entries if e.token > frozen_token]
    successor_first = min((e.revision for e in after), default=0)
    problems = [p for p in (
        lost_write(history, entries),
        tokens_go_back(entries),
        read_went_back(history),
        not_linearizable(history, entries),
    ) if p is not None]
    late = [e for e in entries if e.token <= frozen_token and e.revision > successor_first]
    if successor_first and late:
        problems.append(f"{len(late)} entries with the stopped leader's token {frozen_token} "
                        f"after its successor's first write (revision {successor_first})")
    if probe is not None:
        problems.append(f"the store accepted a write with the stopped leader's token {frozen_token}")
    if not successor_first:
        problems.append("the successor of the stopped leader wrote nothing")
    acked = len(history.acked())
    return KvRun(
        acked=acked, failed=len(history.puts) - acked, reads=len(history.gets),
        entries=len(entries), leaders=leaders, frozen_token=frozen_token,
        successor_first_revision=successor_first, stale_probe_refused=probe is None,
        fenced_on_wake=int((woken.get("counters") or {}).get("kv-fenced", 0)),
        blocked_stops=blocked_stops, problems=problems,
    )
