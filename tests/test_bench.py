"""`hedgeplug bench` on real `hedgeplug run` processes (loopback, sqlite lock)."""

from __future__ import annotations

import json

import pytest

from hedgeplug.cli import main


@pytest.mark.slow
def test_leader_kill_on_real_processes(capsys) -> None:  # noqa: ANN001
    code = main(
        [
            "bench",
            "leader-kill",
            "--size",
            "3",
            "--rounds",
            "1",
            "--timeout",
            "40",
            "--set",
            "lock.ttl=2s",
            "--json",
        ]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    failover = figures["failover_s"]
    assert failover["count"] == 1
    # A SIGKILLed leader keeps its lease until it expires: about the ttl, never instantly.
    assert 0.5 < failover["max"] < 10
    assert figures["cpu_seconds_per_node"]["count"] == 2


@pytest.mark.slow
def test_scale_up_on_real_processes_ends_in_one_group(capsys) -> None:  # noqa: ANN001
    assert main(["bench", "scale-up", "-k", "3", "--timeout", "40", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["size"] == 5 and figures["groups_at_end"] == 1
    assert figures["convergence_s"] is not None


def test_bench_refuses_unbounded_or_nonsense_runs(capsys) -> None:  # noqa: ANN001
    assert main(["bench", "scale-up", "-k", "500"]) == 2
    assert "allows 200" in capsys.readouterr().err
    assert main(["bench", "churn", "--size", "1"]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["bench", "leader-kill", "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err
