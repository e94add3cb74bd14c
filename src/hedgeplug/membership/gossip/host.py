"""What the helpers (prober, push-pull, anchor, dissemination) use of the
running gossip: a typing Protocol, so they depend on this small surface
instead of importing the protocol module that wires them together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hedgeplug.plugin import Member, NodeContext, View

from .awareness import Awareness
from .queue import TransmitQueue
from .settings import Settings
from .state import MemberTable
from .suspicion import Suspicions


class GossipHost(Protocol):
    settings: Settings
    ctx: NodeContext
    table: MemberTable | None
    leaving: bool
    heard: dict[str, float]  # member id -> last time a message from it arrived
    queue: TransmitQueue
    awareness: Awareness
    suspicions: Suspicions

    @property
    def me(self) -> Member: ...

    @property
    def view(self) -> View: ...

    def start(self) -> MemberTable: ...

    def cluster_size(self) -> int: ...

    def count(self, what: str, n: int = 1) -> None: ...

    def heard_from(self, member_id: str) -> None: ...

    def piggyback(self) -> list[list[Any]]: ...

    def absorb(self, records: Any, *, from_state: bool = False) -> bool: ...

    def suspect(self, member: Member, confirmed_by: Sequence[str] = ()) -> None: ...

    def expire_suspicions(self) -> None: ...

    def publish(self) -> None: ...

    async def send(self, address: str, payload: Any) -> None: ...

    async def request(self, address: str, payload: Any, timeout: float) -> Any: ...
