"""Coordination state kept in the lock store (not in any one node's memory),
so it survives leader changes: the fenced key/value log (kv.py, written
through the leader) and the distributed semaphore (semaphore.py)."""

from __future__ import annotations

from .blocking import BlockingPermit, BlockingSemaphore, blocking_semaphore
from .permit import Permit, SlotLost
from .semaphore import (
    Semaphore,
    SemaphoreTimeout,
    close_semaphores,
    control_semaphore_status,
    semaphore,
    semaphore_snapshot,
    semaphore_status,
)
from .slots import LimitMismatch, SemaphoreError

__all__ = [
    "BlockingPermit",
    "BlockingSemaphore",
    "LimitMismatch",
    "Permit",
    "Semaphore",
    "SemaphoreError",
    "SemaphoreTimeout",
    "SlotLost",
    "blocking_semaphore",
    "close_semaphores",
    "control_semaphore_status",
    "semaphore",
    "semaphore_snapshot",
    "semaphore_status",
]
