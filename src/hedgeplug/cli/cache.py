"""`hedgeplug cache stats|get|set NAME ...`: a node's partitioned cache, through any node.

    hedgeplug cache stats sessions -a 127.0.0.1:7700
    hedgeplug cache get sessions user:42 -a 127.0.0.1:7700
    hedgeplug cache set sessions user:42 '{"name": "ada"}' --json-value --ttl 10m -a 127.0.0.1:7700

The node at --address does the work on the cache's own channel: `get` and
`set` go to the key's owners as any call on that node would.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..control import ControlClient
from ..errors import RemoteError
from .common import (
    UsageError,
    add_client_arguments,
    client_from_args,
    duration_type,
    print_json,
    run_async,
    show_value,
    table,
)

HELP = "show a named cache's counters, or get and set keys, through the node at --address"

# The node's application channels carry this prefix (node.channel), the cache its own.
CHANNEL = "app:cache:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cache_command", metavar="stats|get|set", required=True)
    stats = sub.add_parser("stats", help="counters and sizes of the cache on that node")
    get = sub.add_parser("get", help="read KEY (from its owners)")
    put = sub.add_parser("set", help="write KEY on its owners")
    for p in (stats, get, put):
        p.add_argument("name", metavar="NAME", help="the cache's name")
        add_client_arguments(p)
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
    for p in (get, put):
        # Not "key": that is the cluster key (--key) of the client arguments.
        p.add_argument("cache_key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help="text to store (JSON with --json-value)")
    put.add_argument("--json-value", action="store_true", help="parse VALUE as JSON")
    put.add_argument("--ttl", type=duration_type, default=None, help="expiry, e.g. 30s or 10m")


async def call_cache(client: ControlClient, address: str, name: str, payload: list[Any], timeout: float) -> Any:
    """One request on the cache's own channel of the node at `address`."""
    try:
        return await client.call(address, payload, timeout, channel=CHANNEL + name)
    except RemoteError as exc:
        if "no handler for channel" in str(exc):
            raise RemoteError(f"{address} has no cache named {name!r}") from None
        raise


def _request(args: argparse.Namespace) -> list[Any]:
    if args.cache_command == "stats":
        return ["stats"]
    key = args.cache_key.encode()
    if args.cache_command == "get":
        return ["cget", key]
    value: Any = args.value
    if args.json_value:
        try:
            value = json.loads(args.value)
        except json.JSONDecodeError as exc:
            raise UsageError(f"VALUE is not valid JSON: {exc}") from None
    return ["cset", key, value, args.ttl]


async def _run(args: argparse.Namespace) -> Any:
    payload = _request(args)
    async with client_from_args(args) as client:
        return await call_cache(client, args.address, args.name, payload, args.timeout)


def render_stats(stats: dict[str, Any]) -> str:
    head = (
        f"cache {stats.get('name')}: {stats.get('keys')} keys ({stats.get('owned_keys')} owned here), "
        f"{stats.get('bytes')} of {stats.get('max_memory')} bytes, R={stats.get('replicas')}, "
        f"{stats.get('members')} members, hit rate {stats.get('hit_rate')}"
    )
    skip = {"name", "keys", "owned_keys", "bytes", "max_memory", "replicas", "members", "hit_rate"}
    rows = [[k, str(v)] for k, v in sorted(stats.items()) if k not in skip]
    return head + "\n\n" + table(rows, ["COUNTER", "VALUE"])


def run(args: argparse.Namespace) -> int:
    answer = run_async(_run, args)
    if args.json:
        print_json(answer)
    elif args.cache_command == "stats":
        print(render_stats(answer), flush=True)
    elif args.cache_command == "get":
        print("(miss)" if answer is None else show_value(answer), flush=True)
    else:
        print("ok", flush=True)
    return 0
