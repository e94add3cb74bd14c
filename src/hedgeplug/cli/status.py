"""`hedgeplug status`: ask a running node who leads and whom it sees."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_client_arguments, client_from_args, print_json, run_async, table

HELP = "ask a running node for its leader, token and member view"
# `status --ready` when the node answers but is not ready (1: unreachable, 2: usage).
EXIT_NOT_READY = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_client_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the full status as JSON")
    parser.add_argument(
        "--ready",
        action="store_true",
        help=f"a probe: exit {EXIT_NOT_READY} and say why when the node is not ready "
        "(not in its view, no leader known, or the lock store silent for longer than the ttl)",
    )


def render(status: dict[str, Any]) -> str:
    leader = status.get("leader") or {}
    leader_id = leader.get("id")
    members = status.get("members", [])
    ready = status.get("ready") if isinstance(status.get("ready"), dict) else None
    fields = [
        ("Node", f"{status.get('id')} at {status.get('address')} (cluster {status.get('cluster')})"),
        ("Leader", f"{leader_id} at {leader.get('address')}, token {status.get('token')}"
                   if leader_id else "none known"),
        ("This node leads", "yes" if status.get("is_leader") else "no"),
        ("Members", f"{len(members)} in view {status.get('view_version')} "
                    f"(digest {status.get('view_digest')})"),
    ]
    protocols = status.get("protocols")
    if isinstance(protocols, dict):  # absent from a node of release 0.1.0
        fields.append(("Protocols", f"wire {protocols.get('wire')} (sending {protocols.get('wire_in_use')} "
                                    f"to members), control {protocols.get('control')}"))
    if ready is not None:
        word = "yes" if ready.get("ready") else "no: "
        fields.append(("Ready", word + ("" if ready.get("ready") else "; ".join(ready.get("reasons", [])))))
    fields.append(("Frames dropped", _drops(status)))
    width = max(len(label) for label, _ in fields) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in fields]
    lines.append("")
    rows = [
        [
            m.get("id", "?"),
            m.get("address", "?"),
            m.get("state", ""),
            "leader" if m.get("id") == leader_id else "",
        ]
        for m in members
    ]
    lines.append(table(rows, ["ID", "ADDRESS", "STATE", "ROLE"]))
    return "\n".join(lines)


def _drops(status: dict[str, Any]) -> str:
    """Frames this node refused, by reason (wire checks and transport checks)."""
    counted = {
        k[len("drop.") :]: v for k, v in status.get("counters", {}).items() if k.startswith("drop.")
    }
    for reason, n in status.get("transport", {}).get("dropped", {}).items():
        counted[reason] = counted.get(reason, 0) + n
    if not counted:
        return "none"
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counted.items()))


async def _fetch(args: argparse.Namespace) -> dict[str, Any]:
    async with client_from_args(args) as client:
        return await client.status(str(args.address), args.timeout)


def run(args: argparse.Namespace) -> int:
    status = run_async(_fetch, args)
    if args.ready:
        return report_ready(status, as_json=args.json)
    if args.json:
        print_json(status)
    else:
        print(render(status), flush=True)
    return 0


def report_ready(status: dict[str, Any], *, as_json: bool) -> int:
    verdict = status.get("ready")
    if not isinstance(verdict, dict):
        print(f"node {status.get('id')} does not report readiness (an older hedgeplug?)", flush=True)
        return EXIT_NOT_READY
    if as_json:
        print_json(verdict)
    else:
        word = "ready" if verdict.get("ready") else "NOT ready"
        print(f"{status.get('id')}: {word}: " + "; ".join(map(str, verdict.get("reasons", []))), flush=True)
    return 0 if verdict.get("ready") else EXIT_NOT_READY
