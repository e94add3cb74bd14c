"""Coordination state kept in the lock store (not in any one node's memory),
so it survives leader changes: the distributed semaphore."""

from __future__ import annotations

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
    "LimitMismatch",
    "Permit",
    "Semaphore",
    "SemaphoreError",
    "SemaphoreTimeout",
    "SlotLost",
    "close_semaphores",
    "control_semaphore_status",
    "semaphore",
    "semaphore_snapshot",
    "semaphore_status",
]
