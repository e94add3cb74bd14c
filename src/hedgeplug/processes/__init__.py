"""Real `hedgeplug run` OS processes on loopback: what the demo and the
bench run, and what tests build on (`hedgeplug.testing.processes`).

    node     one child: start, ready line, signals, log
    status   agreement of a set of node statuses
    cluster  ProcessCluster: a local cluster from one typed Config
"""

from __future__ import annotations

from .cluster import ProcessCluster, cluster_config
from .node import (
    DIE_WITH_PARENT,
    READY_RE,
    NodeProcess,
    ProcessError,
    child_environment,
    start_node,
    start_process,
)
from .status import Status, agreement, summarize

__all__ = [
    "DIE_WITH_PARENT", "READY_RE", "NodeProcess", "ProcessCluster", "ProcessError", "Status",
    "agreement", "child_environment", "cluster_config", "start_node", "start_process",
    "summarize",
]
