"""What makes a simulation replayable: seeds derived from the run's seed, and
trio's scheduler put in its reproducible mode."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from random import Random


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (a node, the network) from the run's seed."""
    return Random(f"{seed}/{purpose}").getrandbits(63)


@contextmanager
def reproducible_scheduling(seed: int) -> Iterator[None]:
    """Make trio's run-queue order a function of `seed`.

    trio deliberately shuffles the order of runnable tasks; under Hypothesis
    it sorts them and shuffles with a private seeded Random instead. We flip
    the same switch for the length of a run and put it back afterwards.
    """
    import trio._core._run as trio_run

    if not hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING") or not hasattr(trio_run, "_r"):
        # A trio without the switch: runs still work, digests may differ between runs.
        logging.getLogger("hedgeplug.sim").warning("this trio cannot order tasks reproducibly")
        yield
        return
    old_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    old_state = trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run._r.seed(seed)
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = old_flag  # type: ignore[misc]
        trio_run._r.setstate(old_state)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
