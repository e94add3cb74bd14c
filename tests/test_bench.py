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


@pytest.mark.slow
def test_idle_cost_and_round_trip_beside_a_raw_echo(capsys) -> None:  # noqa: ANN001
    assert main(["bench", "idle", "--size", "3", "--window", "2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["cpu_s_per_node_per_min"]["count"] == 2  # the followers
    # Followers beat the leader every second: they send something, but little.
    assert 10 < figures["bytes_sent_per_node_per_s"]["median"] < 5000
    # Members tick one way once the leader said it takes ticks: the idle
    # leader, which answered both followers' beats before, now sends less
    # than one follower does.
    assert 0 <= figures["leader_bytes_sent_per_s"] < figures["bytes_sent_per_node_per_s"]["median"]
    assert figures["status_rtt_ms"]["count"] == figures["raw_tcp_echo_rtt_ms"]["count"] == 200
    assert figures["status_over_echo_median"] > 0


@pytest.mark.slow
def test_detect_times_a_killed_follower_gone_from_every_view_over_udp(capsys) -> None:  # noqa: ANN001
    argv = ["bench", "detect", "--size", "4", "--rounds", "1", "--timeout", "25"]
    argv += ["--membership", "gossip", "--transport", "udp", "--json"]
    assert main(argv) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["transport"] == "udp" and figures["size"] == 3
    detection = figures["detection_s"]
    # A SWIM crash is found by a failed probe and a suspicion timeout (4s at
    # this size on the lan profile): never at once, well within the bound.
    assert detection["count"] == 1 and 2 < detection["max"] < 20
    assert figures["agreement_after_kill_s"]["max"] >= detection["max"]
    assert figures["groups_at_end"] == 1


def test_bench_rejects_an_unknown_transport(capsys) -> None:  # noqa: ANN001
    assert main(["bench", "detect", "--transport", "carrier-pigeon"]) == 2
    assert "--transport" in capsys.readouterr().err


def test_bench_flag_and_set_of_one_key_is_an_error_naming_both(capsys) -> None:  # noqa: ANN001
    argv = ["bench", "idle", "--membership", "gossip", "--set", "membership.use=heartbeat"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--membership" in err and "--set membership.use" in err


def test_scale_up_start_limit_is_the_timeout_flag(capsys) -> None:  # noqa: ANN001
    # No Python process reports its address within 10 ms: the message must
    # name --timeout's value, not a fixed limit of its own.
    assert main(["bench", "scale-up", "-k", "1", "--timeout", "0.01"]) == 2
    assert "did not report its address within 0.01s" in capsys.readouterr().err
