"""The `semaphore-faults` scenario in the deterministic simulator: clean,
replayable from its seed, and its checker catches a semaphore that lets a
holder believe too long."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hedgeplug.sim.scenarios as scenarios
from hedgeplug.sim import Simulation, load_scenario
from hedgeplug.sim.semaphore_checks import max_overlap

SCENARIO = str(Path(scenarios.__file__).with_name("semaphore_faults.py"))


def run(seed: int, **params: object):
    spec = load_scenario(SCENARIO)
    bound = spec.bind(dict(params))
    sim = Simulation(seed)
    result = sim.run(lambda s: spec.run(s, **bound), name=spec.name, params=bound)
    checker = next(c for c in sim.checkers if getattr(c, "name", "") == "semaphore")
    return result, checker


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_semaphore_faults_never_exceeds_the_limit(seed: int) -> None:
    result, checker = run(seed)
    assert result.ok, (result.violation_counts, result.first_violation)
    summary = checker.summary()
    assert summary["peak"] == 3  # the limit is reached...
    assert summary["holds"] > 50  # ...through every phase...
    assert summary["lost"] >= 1  # ...and the frozen holder really lost its slot (outage losses depend on hold lengths)


def test_semaphore_faults_replays_from_its_seed() -> None:
    first, _ = run(5, size=4, phase=5.0)
    second, _ = run(5, size=4, phase=5.0)
    other, _ = run(6, size=4, phase=5.0)
    assert first.digest == second.digest and first.trace_lines == second.trace_lines
    assert other.digest != first.digest


def test_semaphore_faults_replays_in_another_interpreter() -> None:
    # Another string-hash seed and other object addresses must not change the run.
    code = textwrap.dedent(
        f"""
        from hedgeplug.sim import Simulation, load_scenario
        spec = load_scenario({SCENARIO!r})
        p = spec.bind({{"size": 4, "phase": 5.0}})
        print(Simulation(5).run(lambda s: spec.run(s, **p)).digest)
        """
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": str(h), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.strip()
        for h in (1, 2)
    }
    assert digests == {run(5, size=4, phase=5.0)[0].digest}


def test_the_checker_catches_a_holder_that_believes_past_its_lease(monkeypatch) -> None:
    import hedgeplug.state.permit as permit

    # A broken rule: belief for three ttls after sending, whatever the store says.
    monkeypatch.setattr(permit, "valid_until", lambda sent_at, settings: sent_at + 3 * settings.ttl)
    result, _ = run(1)
    assert "semaphore-limit" in result.violation_counts, result.violation_counts


def test_max_overlap_counts_touching_intervals_as_apart() -> None:
    assert max_overlap([(0, 1), (1, 2), (0.5, 1.5)]) == (2, 0.5)
    assert max_overlap([]) == (0, 0.0)
