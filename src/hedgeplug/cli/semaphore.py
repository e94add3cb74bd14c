"""`hedgeplug semaphore status NAME`: a semaphore's limit and holders, through any node."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import TransportError
from .common import add_client_arguments, client_from_args, print_json, run_async, table

HELP = "look at a distributed semaphore (its limit and who holds its slots) through a running node"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    status = sub.add_parser(
        "status", help="the limit and every held slot of semaphore NAME, as the store has them"
    )
    status.add_argument("name", metavar="NAME", help="the semaphore's name")
    add_client_arguments(status)
    status.add_argument("--json", action="store_true", help="print the answer as JSON")


def render(status: dict[str, Any]) -> str:
    lines = [
        f"semaphore {status.get('name')}: limit {status.get('limit')}, "
        f"{status.get('held')} held, {status.get('free')} free",
    ]
    rows = [
        [str(h.get("slot")), str(h.get("holder")), str(h.get("address")), str(h.get("token")),
         f"{h.get('remaining')}s"]
        for h in status.get("holders", [])
    ]
    if rows:
        lines += ["", table(rows, ["SLOT", "HOLDER", "ADDRESS", "TOKEN", "LEASE LEFT"])]
    return "\n".join(lines)


async def _fetch(args: argparse.Namespace) -> dict[str, Any]:
    async with client_from_args(args) as client:
        reply = await client.call(
            args.address, {"op": "semaphore-status", "name": args.name}, args.timeout
        )
    if not isinstance(reply, dict) or "limit" not in reply:
        raise TransportError(f"{args.address} sent a malformed semaphore status")
    return reply


def run(args: argparse.Namespace) -> int:
    status = run_async(_fetch, args)
    if args.json:
        print_json(status)
    else:
        print(render(status), flush=True)
    return 0
