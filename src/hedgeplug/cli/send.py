"""`hedgeplug send`: a payload to the leader, through any node."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import (
    UsageError,
    add_client_arguments,
    client_from_args,
    print_json,
    run_async,
    show_value,
)

HELP = "send PAYLOAD to the leader through the node at --address and print its reply"


def add_payload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "payload", metavar="PAYLOAD", help="text to send (JSON with --json-payload)"
    )
    parser.add_argument("--json-payload", action="store_true", help="parse PAYLOAD as JSON")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def payload_of(args: argparse.Namespace) -> Any:
    if not args.json_payload:
        return args.payload
    try:
        return json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise UsageError(f"PAYLOAD is not valid JSON: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_client_arguments(parser)
    add_payload_arguments(parser)


async def _send(args: argparse.Namespace) -> Any:
    payload = payload_of(args)
    async with client_from_args(args) as client:
        return await client.send(str(args.address), payload, args.timeout)


def run(args: argparse.Namespace) -> int:
    reply = run_async(_send, args)
    if args.json:
        print_json(reply)
    else:
        print(show_value(reply), flush=True)
    return 0
