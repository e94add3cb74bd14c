"""The NodeContext a node hands to its plugins (see contracts.NodeContext).

Identity, clock and randomness exist from the start; the runtime parts
(election, channels, transport figures) are connected once the node has
built its lock and transport, before membership and broadcast are built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from random import Random
from typing import Any

import anyio

from ..channels import Dispatcher, NodeChannel
from ..config import Config
from ..contracts import Lease, TransportStats
from ..election import Election
from ..errors import HedgeplugError
from ..versions import (
    CONTROL_VERSION_ENV,
    CONTROL_VERSIONS,
    WIRE_VERSION_ENV,
    WIRE_VERSIONS,
    pinned,
    with_advertisement,
)
from ..view import Member, View


class NodeContext:
    """What every plugin of one node sees of it."""

    def __init__(
        self,
        config: Config,
        *,
        address: Callable[[], str],
        view: Callable[[], View],
        publish_view: Callable[[View], None],
        spawn: Callable[..., None],
    ) -> None:
        cfg = config.node
        self.id = cfg.id
        self.cluster = cfg.cluster
        self.lock_name = cfg.lock
        # The newest protocol versions this node speaks (older when pinned for a
        # test), advertised to the others in its metadata (hedgeplug.versions).
        self.wire_version = pinned(WIRE_VERSION_ENV, WIRE_VERSIONS)
        self.control_version = pinned(CONTROL_VERSION_ENV, CONTROL_VERSIONS)
        self.meta = with_advertisement(cfg.meta, self.wire_version, self.control_version)
        seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "big")
        self.random = Random(seed)
        self.log = logging.getLogger(f"hedgeplug.node.{cfg.id}")
        self.settings = config
        self._address = address
        self._view = view
        self._publish_view = publish_view
        self._spawn = spawn
        self._election: Election | None = None
        self._dispatcher: Dispatcher | None = None
        self._transport_stats: TransportStats | None = None

    def connect(self, election: Election, dispatcher: Dispatcher, transport_stats: TransportStats) -> None:
        """Give the context the runtime parts it speaks for (the node does this once)."""
        self._election = election
        self._dispatcher = dispatcher
        self._transport_stats = transport_stats

    def _runtime(self) -> tuple[Election, Dispatcher]:
        if self._election is None or self._dispatcher is None:
            raise HedgeplugError("the node is still building its lock and transport")
        return self._election, self._dispatcher

    @property
    def address(self) -> str:
        return self._address()

    def now(self) -> float:
        return anyio.current_time()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        self._spawn(fn, *args)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    @property
    def leader(self) -> Lease | None:
        return self._election.leader if self._election is not None else None

    @property
    def is_leader(self) -> bool:
        return self._election is not None and self._election.is_leader

    @property
    def newest_token(self) -> int:
        return self._election.newest_token if self._election is not None else 0

    async def wait_leader_change(self) -> None:
        await self._runtime()[0].wait_change()

    async def read_leader(self) -> Lease | None:
        return await self._runtime()[0].read_leader()

    @property
    def view(self) -> View:
        return self._view()

    def publish_view(self, view: View) -> None:
        self._publish_view(view)

    def channel(self, name: str) -> NodeChannel:
        return self._runtime()[1].channel(name)

    def count(self, what: str, n: int = 1) -> None:
        self._runtime()[1].count(what, n)

    def transport_for(self, member: Member) -> str:
        return member.address

    @property
    def stats(self) -> Any:
        return self._transport_stats
