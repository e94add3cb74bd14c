"""`hedgeplug bench cache` with tiny counts: real node processes, a real
redis-server and memcached (Debian's packages, started by the bench on free
loopback ports). Checks the JSON's shape and that every figure is a
positive number, not how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hedgeplug.cli import bench_cache, bench_cache_servers

TINY = ["--size", "3", "--count", "20", "--seconds", "0.2", "--keys", "12", "--batch", "4", "--timeout", "30"]
PATHS = {"hedgeplug get", "hedgeplug get local", "hedgeplug set", "redis get", "redis set",
         "memcached get", "memcached set", "trio tcp echo (floor)"}


def positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hedgeplug", "bench", "cache", *argv],
        capture_output=True, text=True, timeout=120,
    )


def test_bench_cache_json_beside_redis_and_memcached() -> None:
    done = bench("--json", "--values", "100,10KiB", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["scenario"] == "cache" and figures["nodes"] == 3 and figures["missing"] == {}
    assert set(figures["baselines"]) == {"redis", "memcached"}
    assert figures["value_sizes"] == [100, 10240]
    assert set(figures["sizes"]) == {"100", "10240"}
    for block in figures["sizes"].values():
        assert positive(block["keys"])
        for phase in ("one_node", "all_nodes"):
            assert set(block[phase]) == PATHS
            for path, row in block[phase].items():
                for field in ("count", "p50_us", "p99_us", "ops_per_s"):
                    assert positive(row[field]), (phase, path, field, row)
                assert row["p50_us"] <= row["p99_us"]
        assert block["all_nodes"]["hedgeplug get"]["nodes"] == 3
        assert set(block["batched_keys_per_s"]) == {"hedgeplug get_many", "redis mget", "memcached get_many"}
        for rates in block["batched_keys_per_s"].values():
            assert positive(rates["one_node"]) and positive(rates["per_node_all_at_once"])
        assert set(block["memory"]) == {"hedgeplug", "redis", "memcached"}
        assert positive(block["memory"]["hedgeplug"]["overhead_bytes_per_entry"])
    cpu = figures["sizes"]["100"]["cpu_us_per_call"]
    assert set(cpu) == {"hedgeplug get", "hedgeplug get local", "redis get", "memcached get", "trio tcp echo (floor)"}
    assert all(isinstance(v, float) and v >= 0 for v in cpu.values())
    targets = figures["targets"]
    measured = {"remote_get_over_redis_get_p50", "local_get_p50_us", "batched_gets_per_s_per_node"}
    assert set(targets) - {"remote_get_over_redis_get_cpu"} == {*measured, "value_size", "remote_get_over_floor_p50"}
    assert positive(targets["remote_get_over_floor_p50"])
    for name in measured:
        assert positive(targets[name]["value"]) and isinstance(targets[name]["met"], bool)
    assert len(figures["load_average"]) == 3


def test_bench_cache_without_memcached_says_so_and_measures_the_rest(monkeypatch, capsys) -> None:  # noqa: ANN001
    real = bench_cache_servers.find_binary
    # Stands in for a machine without Debian's memcached package.
    monkeypatch.setattr(bench_cache_servers, "find_binary", lambda name: None if name == "memcached" else real(name))
    from hedgeplug.cli import build_parser

    args = build_parser(["bench"]).parse_args(["bench", "cache", "--values", "100", *TINY])
    assert bench_cache.run(args) == 0
    out = capsys.readouterr().out
    assert "not measured: memcached: memcached not found" in out
    assert "redis get" in out and "hedgeplug get" in out and "memcached get" not in out
    assert "remote_get_over_redis_get_p50" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "2"], "--size must be from 3"),
        (["--values", "100,2MiB"], "outside 1 B .. 1 MiB"),
        (["--values", "lots"], "'lots' is not a size"),
        (["--seconds", "0"], "--seconds and --timeout must be positive"),
        (["--transport", "udp"], "runs on the tcp transport"),
        (["--plot", "x.png"], "bench cache draws no plot"),
    ],
)
def test_bench_cache_refuses_bad_options(argv: list[str], message: str) -> None:
    done = bench(*argv)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
