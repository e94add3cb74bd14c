"""The simulator: determinism, scenarios, the command. Runs are trio-only by
nature (MockClock), small and short in virtual time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hedgeplug.cli import main
from hedgeplug.errors import HedgeplugError
from hedgeplug.sim.harness import Simulation
from hedgeplug.sim.metrics import count_groups
from hedgeplug.sim.scenarios import BUILTIN, load_scenario


def run(name: str, seed: int = 1, **params):  # noqa: ANN003, ANN201
    spec = load_scenario(name)
    bound = spec.bind(params)
    sim = Simulation(seed)
    return sim.run(lambda s: spec.run(s, **bound), name=name, params=bound)


CHURN = {"size": 5, "duration": 12.0, "every": 2.0, "settle": 10.0}


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    a = run("churn", 7, **CHURN)
    b = run("churn", 7, **CHURN)
    c = run("churn", 8, **CHURN)
    assert a.digest == b.digest and a.trace_lines == b.trace_lines
    assert c.digest != a.digest
    assert a.metrics == b.metrics


def test_digest_does_not_depend_on_the_process() -> None:
    # Another interpreter with another string-hash seed must replay the run exactly.
    code = textwrap.dedent(
        """
        from hedgeplug.sim.harness import Simulation
        from hedgeplug.sim.scenarios import load_scenario
        spec = load_scenario("churn")
        p = spec.bind({"size": 5, "duration": 12.0, "every": 2.0, "settle": 10.0})
        print(Simulation(7).run(lambda s: spec.run(s, **p)).digest)
        """
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": str(h), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        for h in (1, 2)
    }
    assert digests == {run("churn", 7, **CHURN).digest}


# The cache scenarios check the cache's invariants in their own tests (test_cache_sim.py).
@pytest.mark.parametrize("name", sorted(n for n in BUILTIN if not n.startswith("cache-")))
def test_every_builtin_scenario_runs_clean_at_small_size(name: str) -> None:
    small = {
        "scale-up": {"k": 12, "warmup": 5.0, "settle": 10.0},
        "spiky": {"high": 12, "duration": 40.0, "settle": 15.0},
        "churn": CHURN,
        "leader-kill": {"size": 4, "kills": 2, "gap": 10.0, "settle": 10.0},
        "leader-freeze": {"size": 4, "freeze": 8.0, "settle": 10.0},
        "store-outage": {"size": 4, "outage": 8.0, "settle": 10.0},
        "partition-heal": {"size": 6, "duration": 10.0, "settle": 10.0},
        "mass-crash": {"size": 8, "crashed": 5, "warmup": 5.0, "settle": 15.0},
        "semaphore-faults": {"size": 4, "phase": 5.0},
        "kv-faults": {"size": 4, "writers": 2, "readers": 1},  # (checked fully in test_kv_sim.py)
    }[name]
    result = run(name, **small)
    assert result.ok, result.first_violation
    m = result.metrics
    assert m["final_groups"] == 1 and m["final_agreement"] == 1.0
    assert m["convergence_time"] is not None and m["convergence_time"] < 10
    assert m["leader_overlap"]["samples"] == 0
    assert result.traffic["messages_per_node_per_second"] > 0


def test_scale_up_measures_every_join() -> None:
    result = run("scale-up", k=20, warmup=5.0, settle=10.0)
    assert result.nodes_started == 22
    assert result.metrics["join_time"]["count"] == 22
    assert result.metrics["unresolved"] == {"join": 0, "detection": 0, "failover": 0}


def test_leader_kill_measures_failover_and_detection() -> None:
    result = run("leader-kill", size=4, kills=2, gap=10.0, settle=10.0)
    m = result.metrics
    assert m["failover_time"]["count"] == 2 and m["detection_time"]["count"] == 2
    # A crashed leader's lease must expire first: failover takes about the ttl (3s).
    assert 1.0 < m["failover_time"]["max"] < 6.0


def test_count_groups() -> None:
    a, b, c, d = "abcd"
    assert count_groups({}) == 0
    # Nodes that hold no view yet and are in nobody's view are still joining.
    assert count_groups({a: frozenset(), b: frozenset()}) == 0
    assert count_groups({a: frozenset({a, b}), b: frozenset({a, b}), c: frozenset()}) == 1
    assert (
        count_groups(
            {a: frozenset({a, b}), b: frozenset({b}), c: frozenset({c, d}), d: frozenset()}
        )
        == 2
    )
    full = frozenset({a, b, c, d})
    assert count_groups({x: full for x in (a, b, c, d)}) == 1
    # Members that are not live (not keys) do not connect anything.
    assert count_groups({a: frozenset({"gone"}), b: frozenset({"gone"})}) == 2


def test_user_scenario_from_a_file(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "mine.py"
    path.write_text(
        textwrap.dedent(
            """
            NAME = "mine"
            DESCRIPTION = "three nodes, one restart"
            PARAMS = {"size": (3, "nodes")}

            async def run(sim, *, size):
                nodes = await sim.start(size)
                await sim.sleep(5)
                await sim.restart(nodes[-1])
                await sim.sleep(10)
            """
        )
    )
    assert main(["sim", str(path), "-p", "size=4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"] == "mine" and data["params"] == {"size": 4}
    assert data["nodes_started"] == 5 and data["metrics"]["final_size"] == 4


def test_command_errors_are_clear(tmp_path, capsys) -> None:  # noqa: ANN001
    assert main(["sim", "no-such"]) == 2
    assert "built-in scenarios" in capsys.readouterr().err
    assert main(["sim", "churn", "-p", "size=many"]) == 2
    assert "expects int" in capsys.readouterr().err
    assert main(["sim", "churn", "-p", "nonsense"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["sim", "churn", "--membership", "nope"]) == 2
    assert "no membership named 'nope'" in capsys.readouterr().err
    assert main(["sim", "churn", "-o", "membership.bogus=1", "-p", "duration=3"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["sim", "churn", "--ttl", "soon"]) == 2
    assert "--ttl" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("NAME = 'x'\n")
    assert main(["sim", str(broken)]) == 2
    assert "lacks run" in capsys.readouterr().err
    with pytest.raises(HedgeplugError, match="does not exist"):
        load_scenario(str(tmp_path / "missing.py"))


def test_command_table_list_trace_and_repeat(tmp_path, capsys) -> None:  # noqa: ANN001
    trace = tmp_path / "trace.txt"
    args = ["sim", "leader-kill", "-p", "size=3", "-p", "kills=1", "-p", "gap=8", "-p", "settle=8"]
    assert main([*args, "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "failover time" in out and "trace digest" in out
    assert any(" kill (leader)" in line for line in trace.read_text().splitlines())
    assert main([*args, "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 runs ended split" in out
    assert main(["sim", "--list"]) == 0
    assert "partition-heal" in capsys.readouterr().out


def test_plot_is_written(tmp_path) -> None:  # noqa: ANN001
    # The test command installs the `plot` extra: a missing matplotlib is a failure here.
    import matplotlib  # noqa: F401
    png = tmp_path / "run.png"
    args = ["sim", "leader-kill", "-p", "size=3", "-p", "kills=1", "-p", "gap=8", "-p", "settle=8"]
    assert main([*args, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_are_bounded_in_wall_time_and_nodes() -> None:
    spec = load_scenario("churn")
    params = spec.bind({"size": 5, "duration": 100000.0})
    with pytest.raises(HedgeplugError, match="wall time"):
        Simulation(1, max_wall=0.5).run(lambda s: spec.run(s, **params))
    with pytest.raises(HedgeplugError, match="more than 3 nodes"):
        Simulation(1, max_nodes=3).run(lambda s: spec.run(s, **params))


def test_store_outage_shows_as_time_without_a_leader() -> None:
    result = run("store-outage", size=3, outage=8.0, settle=10.0)
    # The leader steps down within the ttl and nobody leads until the store returns.
    assert 5.0 < result.metrics["leaderless_seconds"] <= 9.0
    assert run("churn", **CHURN).metrics["leaderless_seconds"] < 4.0
