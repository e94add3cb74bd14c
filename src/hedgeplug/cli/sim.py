"""`hedgeplug sim`: run a scenario on the deterministic simulator.

hedgeplug sim scale-up -p k=148 --join one-random --membership gossip --seed 3
hedgeplug sim spiky --json
hedgeplug sim leader-kill --repeat 20          # seeds 1..20, one line each
hedgeplug sim ./my_scenario.py -p size=40 --plot run.png
hedgeplug sim --list
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from functools import partial
from typing import Any

from hedgeplug.config import Config, Setting, load_config, parse_duration, parse_setting
from hedgeplug.errors import ConfigError, HedgeplugError
from hedgeplug.sim.checks import Checker
from hedgeplug.sim.fleet import CLUSTER, JOIN_RULES, NETWORK, STORE
from hedgeplug.sim.harness import Result, Simulation
from hedgeplug.sim.metrics import Snapshot
from hedgeplug.sim.report import format_result, format_runs, plot, to_json
from hedgeplug.sim.scenarios import builtin_scenarios, load_scenario
from hedgeplug.sim.trace import Trace

from .common import duration_type
from .progress import ProgressLine

HELP = "run a scenario on the deterministic simulator (many real nodes, virtual time)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", nargs="?", help="a built-in scenario name or the path of a scenario .py file"
    )
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="scenario parameter"
    )
    parser.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="R", help="run seeds seed..seed+R-1"
    )
    parser.add_argument("--membership", help="membership strategy (default heartbeat)")
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="membership.* or lock.* option for every node, e.g. membership.interval=500ms",
    )
    parser.add_argument(
        "--join", choices=JOIN_RULES, default="one-random", help="join address rule (gossip seeds)"
    )
    parser.add_argument("--ttl", type=duration_type, help="lease ttl (default 3s)")
    parser.add_argument(
        "--convergence-bound",
        default=None,
        help="invariant 2 bound after the last change "
        "(default: the membership's stated bound, 20s if it states none)",
    )
    parser.add_argument(
        "--flap-grace",
        default="20s",
        help="invariant 3: calm time after which a removal is flapping",
    )
    parser.add_argument(
        "--detection-bound",
        default=None,
        help="invariant 3: a departed node is gone from every view within this "
        "(default: the membership's stated bound, 20s if it states none)",
    )
    parser.add_argument(
        "--max-wall", default="15m", help="stop a run after this much real time (default 15m)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png",
        help="plot size, groups, agreement and token over time (a scenario with its own "
        "plot parameter, such as the cache ones, draws that: hit rate and owned keys per node)",
    )
    parser.add_argument("--trace", metavar="FILE", help="write the full event trace")
    parser.add_argument(
        "--list", action="store_true", help="list the built-in scenarios and their parameters"
    )
    parser.add_argument("--verbose", action="store_true", help="show the nodes' log output")


def sim_config(args: argparse.Namespace) -> Config:
    """Every simulated node's configuration, read once: the simulator's memory
    lock and network, a lease of 3s, then -o settings and the typed flags
    (--ttl and -o lock.ttl together are an error naming both)."""
    settings: list[Setting] = []
    for item in args.option:
        setting = parse_setting(item, flag="-o")
        if setting.section not in ("membership", "lock"):
            raise ConfigError(f"-o {item!r}: expected membership.KEY=VALUE or lock.KEY=VALUE")
        settings.append(setting)
    if args.ttl is not None:
        settings.append(Setting("lock", "ttl", args.ttl, "--ttl"))
    if args.membership is not None:
        settings.append(Setting("membership", "use", args.membership, "--membership"))
    own_lock = any((s.section, s.key) == ("lock", "use") for s in settings)
    data = {
        "node": {"cluster": CLUSTER},
        "lock": {"ttl": 3.0, **({} if own_lock else {"use": "memory", "store": STORE})},
        "transport": {"use": "memory", "network": NETWORK},
    }
    return load_config(data=data, overrides=settings, env={})


class ShowProgress(Checker):
    """Writes the run's virtual time and cluster size to the progress line.
    A checker only looks at samples the run takes anyway: showing progress
    adds no task and cannot change a run's course or its digest."""

    name = "progress"

    def __init__(self, line: ProgressLine, label: str) -> None:
        self.line = line
        self.label = label

    def on_sample(self, snap: Snapshot, report: object) -> None:
        leaders = ",".join(snap.leaders) or "none"
        self.line.update(f"{self.label}: t={snap.t:.0f}s, {len(snap.live)} nodes, leader {leaders}")


def _duration(flag: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _bound(flag: str, value: str | None) -> float | None:
    return None if value is None else _duration(flag, value)


def _own_plot(declared: Mapping[str, object], params: Mapping[str, object], path: str | None) -> str | None:
    """--plot for a scenario that declares a `plot` parameter (it draws its
    own figures, e.g. the cache scenarios' hit rate and owned keys per node)."""
    if not path or "plot" not in declared:
        return None
    if params.get("plot"):
        raise HedgeplugError("give --plot FILE or -p plot=FILE, not both")
    return path


def _run_scenario(spec: Any, params: Mapping[str, Any], sim: Simulation) -> Any:
    return spec.run(sim, **params)


def list_scenarios() -> str:
    lines = []
    for spec in builtin_scenarios():
        lines.append(f"{spec.name}: {spec.description}")
        for key, (default, help_text) in spec.params.items():
            lines.append(f"    {key}={default!s:<8} {help_text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_scenarios())
        return 0
    if not args.scenario:
        raise HedgeplugError("name a scenario (hedgeplug sim --list shows them)")
    if args.repeat < 1:
        raise HedgeplugError("--repeat must be at least 1")
    spec = load_scenario(args.scenario)
    params = spec.bind(args.param)
    own_plot = _own_plot(spec.params, params, args.plot)
    config = sim_config(args)
    bound = _bound("--convergence-bound", args.convergence_bound)
    grace = _duration("--flap-grace", args.flap_grace)
    max_wall = _duration("--max-wall", args.max_wall)
    detection = _bound("--detection-bound", args.detection_bound)
    results: list[Result] = []
    sink = None
    try:
        if args.trace:
            try:
                sink = open(args.trace, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise HedgeplugError(f"cannot write trace file {args.trace}: {exc}") from None
        for seed in range(args.seed, args.seed + args.repeat):
            sim = Simulation(
                seed,
                config=config,
                join_rule=args.join,
                convergence_bound=bound,
                flap_grace=grace,
                trace=Trace(sink=sink),
                verbose=args.verbose,
                max_wall=max_wall,
                detection_bound=detection,
            )
            line = ProgressLine(enabled=not args.json)
            sim.sampler.use([*sim.checkers, ShowProgress(line, f"sim {spec.name} seed {seed}")])
            # The scenario draws its own plot of the first seed; the recorded
            # parameters stay as given, so the run's digest does not depend on it.
            run_params = {**params, "plot": own_plot} if own_plot and seed == args.seed else params
            try:
                result = sim.run(partial(_run_scenario, spec, run_params), name=spec.name, params=params)
            finally:
                line.done()
            results.append(result)
            if args.repeat > 1 and not args.json:
                print(
                    f"seed {seed}: {result.digest} groups={result.metrics['final_groups']}",
                    file=sys.stderr,
                )
    finally:
        if sink is not None:
            sink.close()
    if args.plot and not own_plot:
        plot(results[0], args.plot)
    if args.json:
        print(to_json(results, series=False))
    elif len(results) == 1:
        print(format_result(results[0]))
    else:
        print(format_runs(results))
    if args.plot:
        print(f"plot written to {os.path.abspath(args.plot)}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1
