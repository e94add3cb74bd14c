"""`hedgeplug broadcast`: a payload to every member, through any node."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    add_client_arguments,
    client_from_args,
    eprint,
    print_json,
    run_async,
    show_value,
    table,
)
from .send import add_payload_arguments, payload_of

HELP = "broadcast PAYLOAD to every member through the node at --address and print the replies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_client_arguments(parser)
    add_payload_arguments(parser)


async def _broadcast(args: argparse.Namespace) -> list[dict[str, Any]]:
    payload = payload_of(args)
    async with client_from_args(args) as client:
        return await client.broadcast(str(args.address), payload, args.timeout)


def run(args: argparse.Namespace) -> int:
    replies = run_async(_broadcast, args)
    answered = sum(1 for r in replies if r.get("ok"))
    if args.json:
        print_json(replies)
        return 0 if answered else 1
    rows = [
        [
            r.get("member", "?"),
            r.get("address", "?"),
            "ok" if r.get("ok") else "error",
            show_value(r.get("payload")) if r.get("ok") else str(r.get("error")),
        ]
        for r in replies
    ]
    print(table(rows, ["MEMBER", "ADDRESS", "RESULT", "REPLY"]), flush=True)
    failed = len(replies) - answered
    if not replies:
        eprint("hedgeplug: error: nobody to broadcast to: the node has no members in its view yet")
        return 1
    print(f"{len(replies)} replies, {failed} failed", flush=True)
    if not answered:
        eprint("hedgeplug: error: no member answered the broadcast")
        return 1
    return 0
