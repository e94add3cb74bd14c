"""`hedgeplug kv put|get|history|keys|trim`: the key/value log through any node."""

from __future__ import annotations

import argparse
import base64
import datetime
import sys
from typing import Any

from ..errors import HedgeplugError
from .common import UsageError, add_client_arguments, client_from_args, print_json, run_async, table

HELP = "the cluster's key/value log through the node at --address (put, get, history, keys, trim)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kv_command", metavar="ACTION")
    sub.required = True
    put = sub.add_parser("put", help="append VALUE to KEY (through the leader)")
    put.add_argument("log_key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?", help="text; omit with --stdin")
    put.add_argument("--stdin", action="store_true", help="read the value's bytes from stdin")
    get = sub.add_parser("get", help="print the latest value of KEY")
    get.add_argument("log_key", metavar="KEY")
    history = sub.add_parser("history", help="list the versions of KEY, newest first")
    history.add_argument("log_key", metavar="KEY")
    history.add_argument("--limit", "-n", type=int, help="at most N versions")
    history.add_argument("--oldest", action="store_true", help="oldest first")
    keys = sub.add_parser("keys", help="list the keys (starting with PREFIX)")
    keys.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    trim = sub.add_parser("trim", help="drop all but the newest --keep versions of KEY")
    trim.add_argument("log_key", metavar="KEY")
    trim.add_argument("--keep", type=int, required=True, help="versions to keep (at least 1)")
    # (KEY is stored as log_key: --key is the cluster key of the client arguments)
    for action in (put, get, history, keys, trim):
        add_client_arguments(action)
        action.add_argument("--json", action="store_true", help="print the answer as JSON")


def _request(args: argparse.Namespace) -> dict[str, Any]:
    action = args.kv_command
    request: dict[str, Any] = {"op": f"kv.{action}", "timeout": args.timeout}
    if action == "keys":
        request["prefix"] = args.prefix
        return request
    request["key"] = args.log_key
    if action == "put":
        if args.stdin == (args.value is not None):
            raise UsageError("give VALUE or --stdin (one of them)")
        request["value"] = sys.stdin.buffer.read() if args.stdin else args.value.encode()
    elif action == "history":
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {args.limit}")
        request["limit"] = args.limit
        request["oldest_first"] = args.oldest
    elif action == "trim":
        if args.keep < 1:
            raise UsageError(f"--keep must be at least 1, got {args.keep}")
        request["keep"] = args.keep
    return request


async def _call(args: argparse.Namespace, request: dict[str, Any]) -> Any:
    async with client_from_args(args) as client:
        return await client.call(str(args.address), request, args.timeout + 2)


def entry_json(entry: Any) -> dict[str, Any]:
    """An entry as JSON: the value as text when it is UTF-8, else base64 in value_b64."""
    if not isinstance(entry, dict):
        raise HedgeplugError(f"malformed entry from the node: {entry!r:.100}")
    out = dict(entry)
    value = bytes(out.pop("value", b""))
    try:
        out["value"] = value.decode()
    except UnicodeDecodeError:
        out["value_b64"] = base64.b64encode(value).decode()
    return out


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")


def run(args: argparse.Namespace) -> int:
    request = _request(args)
    reply = run_async(_call, args, request)
    action = args.kv_command
    if action == "keys":
        print_json(reply) if args.json else print("\n".join(reply), flush=True)
    elif action == "trim":
        print_json(reply) if args.json else print(f"dropped {reply['dropped']}", flush=True)
    elif action == "get":
        if reply is None:
            print(f"hedgeplug: no value for {args.log_key!r}", file=sys.stderr, flush=True)
            return 3
        if args.json:
            print_json(entry_json(reply))
        else:
            sys.stdout.buffer.write(bytes(reply["value"]) + b"\n")
            sys.stdout.flush()
    elif action == "put":
        entry = entry_json(reply)
        print_json(entry) if args.json else print(
            f"{entry['key']} version {entry['version']} revision {entry['revision']} "
            f"token {entry['token']}", flush=True)
    else:
        entries = [entry_json(e) for e in reply]
        if args.json:
            print_json(entries)
        else:
            rows = [[str(e["version"]), str(e["revision"]), str(e["token"]), _when(e["committed_at"]),
                     e.get("value", "base64:" + e.get("value_b64", ""))] for e in entries]
            print(table(rows, ["VERSION", "REVISION", "TOKEN", "COMMITTED", "VALUE"]), flush=True)
    return 0
