"""`hedgeplug plugins`: what is installed, by kind, and what failed to load."""

from __future__ import annotations

import argparse

from ..registry import Registry
from .common import print_json, table

HELP = "list installed lock, transport, membership and broadcast implementations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace) -> int:
    registry = Registry.load()
    impls = [i.to_json() for i in registry.implementations()]
    failures = [
        {"entry_point": f.entry_point, "distribution": f.distribution, "error": f.error}
        for f in registry.failures
    ]
    if args.json:
        print_json({"implementations": impls, "failures": failures})
        return 0
    rows = [[i["kind"], i["name"], i["distribution"], i["version"], i["options"]] for i in impls]
    print(
        table(rows, ["KIND", "NAME", "DISTRIBUTION", "VERSION", "OPTIONS"])
        if rows
        else "no implementations installed",
        flush=True,
    )
    if failures:
        print(f"\n{len(failures)} plugin(s) failed to load:", flush=True)
        for f in failures:
            print(f"  {f['entry_point']} from {f['distribution']}: {f['error']}", flush=True)
    return 0
