"""One simulated process, as the harness, the faults and the checks see it."""

from __future__ import annotations

from typing import Any

import attrs

from hedgeplug.node import Node


@attrs.define(eq=False)
class SimNode:
    """One simulated process."""

    id: str
    index: int
    address: str
    started_at: float
    node: Node | None = None
    state: str = "starting"  # running, crashed, stopped
    stopped_at: float | None = None
    frozen: bool = False
    calm_since: float = 0.0  # last time something happened to it (start, thaw, heal)
    view_ids: frozenset[str] = frozenset()
    join: tuple[str, ...] = ()
    stop_requested: Any = None  # anyio.Event
    done: Any = None  # anyio.Event

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.running and self.node.is_leader
