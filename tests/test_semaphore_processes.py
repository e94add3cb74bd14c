"""Twenty real processes contend for a semaphore of limit 3 through one
sqlite file while holders are SIGKILLed or SIGSTOPped past their lease; the
holders' own records never show more than 3 at once, and a killed or frozen
holder's slot comes back within its lease ttl (plus one retry period)."""

from __future__ import annotations

import pytest

from hedgeplug.testing.semaphore_processes import (
    Hold,
    SemaphoreRun,
    assert_semaphore_run,
    check_semaphore_run,
    run_semaphore_processes,
)

TTL = 3.0
LIMIT = 3


@pytest.mark.slow
def test_twenty_processes_never_hold_more_than_three_on_sqlite(tmp_path):
    run = run_semaphore_processes(
        tmp_path, {"use": "sqlite", "path": str(tmp_path / "store.sqlite")},
        processes=20, limit=LIMIT, seconds=15.0, kills=5, freezes=2, ttl=TTL,
    )
    print(f"sqlite: {len(run.holds)} holds, {len(run.kills)} kills, {len(run.freezes)} freezes, {run.lost} lost")
    assert_semaphore_run(run, LIMIT, TTL)


def test_the_check_finds_overlaps_double_slots_and_old_tokens():
    holds = [Hold(0, 0, 5, 0.0, 2.0), Hold(1, 0, 4, 1.0, 3.0), Hold(2, 1, 1, 0.5, 2.5), Hold(3, 2, 1, 0.5, 2.5)]
    problems = check_semaphore_run(SemaphoreRun(holds, {}, {}, 0, []), LIMIT)
    assert "4 holders at once at monotonic 1.000, limit 3" in problems
    assert "slot 0 held by 0 and 1 at once" in problems
    assert "slot 0: token 4 after 5" in problems
