"""The semaphore for threaded programs (BlockingNode.semaphore).

A thread cannot be cancelled, so in the ``with`` form the body is NOT
interrupted when the slot is lost: check `permit.held` before each step
that needs the slot (or give `permit.token` to the resource), and the
``with`` block raises SlotLost at its end if the slot was lost meanwhile.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal

from .permit import Permit, SlotLost
from .semaphore import Semaphore


class BlockingPermit:
    """A Permit read from another thread (its state lives on the node's loop)."""

    def __init__(self, portal: BlockingPortal, permit: Permit) -> None:
        self._portal = portal
        self.permit = permit
        self.name = permit.name
        self.slot = permit.slot

    @property
    def token(self) -> int:
        return self.permit.token

    @property
    def held(self) -> bool:
        return bool(self._portal.call(lambda: self.permit.held))

    def release(self) -> None:
        self._portal.call(self.permit.release)


class BlockingSemaphore:
    def __init__(self, portal: BlockingPortal, semaphore: Semaphore) -> None:
        self._portal = portal
        self.semaphore = semaphore
        self._local = threading.local()  # each thread's open `with` blocks

    def acquire(self, timeout: float | None = None) -> BlockingPermit:
        return BlockingPermit(self._portal, self._portal.call(self.semaphore.acquire, timeout))

    def try_acquire(self, timeout: float = 0.0) -> BlockingPermit | None:
        permit = self._portal.call(self.semaphore.try_acquire, timeout)
        return None if permit is None else BlockingPermit(self._portal, permit)

    def release(self, permit: BlockingPermit) -> None:
        permit.release()

    def status(self) -> dict[str, Any]:
        return self._portal.call(self.semaphore.status)

    def _stack(self) -> list[BlockingPermit]:
        if not hasattr(self._local, "open"):
            self._local.open = []
        return self._local.open  # type: ignore[no-any-return]

    def __enter__(self) -> BlockingPermit:
        permit = self.acquire()
        self._stack().append(permit)
        return permit

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        permit = self._stack().pop()
        reason = self._portal.call(lambda: permit.permit.lost_reason)
        permit.release()
        if reason is not None and exc is None:
            raise SlotLost(f"semaphore {permit.name!r}: slot {permit.slot} was lost during the block: {reason}")


def blocking_semaphore(node: Any, name: str, limit: int, *, watch: bool = True) -> BlockingSemaphore:
    """The semaphore `name` of `limit` slots through a started BlockingNode (BlockingNode.semaphore)."""
    from .semaphore import semaphore

    portal = node.portal
    return BlockingSemaphore(portal, portal.call(lambda: semaphore(node.node, name, limit, watch=watch)))
