"""The test kit's view of real node processes: everything from
`hedgeplug.processes`, plus `measure_failover`, the cluster check the lock
plugins' tests share. (The process management itself lives outside the
test kit, so `hedgeplug demo` and `bench` do not import it.)"""

from __future__ import annotations

import anyio
import attrs

from ..processes import (  # noqa: F401  (re-exported for tests and plugins)
    DIE_WITH_PARENT,
    READY_RE,
    NodeProcess,
    ProcessCluster,
    ProcessError,
    Status,
    agreement,
    child_environment,
    cluster_config,
    start_node,
    start_process,
    summarize,
)


@attrs.frozen
class FailoverFigures:
    """What `measure_failover` saw, in seconds from the signal."""

    killed_leader_replaced: float
    agreed_after_kill: float
    stopped_leader_replaced: float
    agreed_after_stop: float

    def __str__(self) -> str:
        return (
            f"SIGKILL leader: new leader {self.killed_leader_replaced:.2f}s, "
            f"agreed view {self.agreed_after_kill:.2f}s; SIGTERM leader: new leader "
            f"{self.stopped_leader_replaced:.2f}s, agreed view {self.agreed_after_stop:.2f}s"
        )


async def measure_failover(
    cluster: ProcessCluster,
    *,
    nodes: int = 5,
    ttl: float,
    settle_before_stop: float = 0.0,
    start_timeout: float = 60.0,
) -> FailoverFigures:
    """The core issue's cluster check against any lock backend: start `nodes`
    `hedgeplug run` processes, wait for one leader and one view, SIGKILL the
    leader and time the new leader and the agreed view, then SIGTERM the new
    leader (graceful: release) and time the handover. Raises ProcessError
    (with the statuses) when a step does not happen within its bound's
    generous timeout; callers assert their own bounds on the figures."""
    await cluster.start(nodes, ready_timeout=start_timeout)
    await cluster.wait_agreed(timeout=start_timeout)
    leader = cluster.leader_process(await cluster.statuses())
    if leader is None:
        raise ProcessError("agreement reached but no process reports leading")
    cluster.kill(leader)
    start = anyio.current_time()
    killed_replaced = await cluster.wait_new_leader(leader.id, timeout=ttl + 15)
    await cluster.wait_agreed(timeout=ttl + 15)
    agreed_after_kill = anyio.current_time() - start

    second = cluster.leader_process(await cluster.statuses())
    if second is None:
        raise ProcessError("agreement reached after the kill but no process reports leading")
    if settle_before_stop:
        await anyio.sleep(settle_before_stop)
    cluster.terminate(second)
    start = anyio.current_time()
    stopped_replaced = await cluster.wait_new_leader(second.id, timeout=ttl + 15)
    await cluster.wait_exit(second)
    await cluster.wait_agreed(timeout=ttl + 15)
    agreed_after_stop = anyio.current_time() - start
    return FailoverFigures(killed_replaced, agreed_after_kill, stopped_replaced, agreed_after_stop)
