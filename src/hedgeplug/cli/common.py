"""Helpers the subcommands share: argument checks, the control client, output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..address import Address
from ..config import Duration, load_config, parse_duration
from ..control import ControlClient, client_transport_options
from ..errors import HedgeplugError
from ..keyring import COMMAND_LINE_WARNING, Keyring, keyring_for
from ..registry import Registry

T = TypeVar("T")


class UsageError(HedgeplugError):
    """A command-line argument is wrong; the message says which and why."""


def address_type(what: str) -> Callable[[str], Address]:
    """An argparse type: HOST:PORT read once by `Address.parse`."""

    def check(text: str) -> Address:
        try:
            return Address.parse(text, what=what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def duration_type(text: str) -> Duration:
    try:
        return Duration(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """--address, cluster/key (or a config to read them from) and --timeout."""
    parser.add_argument(
        "--address",
        "-a",
        required=True,
        type=address_type("--address"),
        help="HOST:PORT of a running node (its 'listening on' line)",
    )
    parser.add_argument("--cluster", help="cluster name (default: from --config, else 'hedgeplug')")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--key",
        help="cluster key (discouraged: visible in ps; prefer HEDGEPLUG_NODE_KEY_FILE,"
        " HEDGEPLUG_NODE_KEY or key_file in --config)",
    )
    group.add_argument(
        "--config", "-c", help="read cluster name, key and transport from this TOML file"
    )
    parser.add_argument(
        "--timeout",
        type=duration_type,
        default=5.0,
        help="how long to wait for the node (default 5s)",
    )


def client_from_args(args: argparse.Namespace) -> ControlClient:
    registry = Registry.load()
    # Always through the loader, so HEDGEPLUG_NODE_KEY(_FILE) reach every command.
    config = load_config(args.config or None, registry=registry)
    cluster, transport = config.node.cluster, config.transport.use
    keys: str | Keyring = keyring_for(config.node)
    if args.cluster:
        cluster = args.cluster
    if args.key:
        eprint(f"hedgeplug: {COMMAND_LINE_WARNING}")
        keys = args.key
    return ControlClient(
        cluster=cluster, key=keys, transport=transport, registry=registry,
        transport_options=client_transport_options(config),
    )


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Commands run on trio, the default backend."""
    return anyio.run(fn, *args, backend="trio")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str), flush=True)


def show_value(value: Any) -> str:
    """A reply as a human reads it: text as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    return json.dumps(value, sort_keys=True, default=str)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)
