"""`hedgeplug run`: one node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

import anyio
import attrs

from ..config import Config, load_config
from ..events import LeaderChanged, MembersChanged
from ..keyring import COMMAND_LINE_WARNING, command_line_keys
from ..node import Node, open_node
from ..registry import Registry
from .common import address_type, run_async

HELP = "run one node in the foreground (stops gracefully on SIGTERM/SIGINT)"
LEVELS = ("debug", "info", "warning", "error")
# The line a parent process (demo, tests) waits for; keep its shape stable.
READY_PREFIX = "hedgeplug: listening on "

log = logging.getLogger("hedgeplug.cli.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", help="TOML configuration file (default: built-in defaults)"
    )
    parser.add_argument(
        "--set",
        "-s",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set lock.ttl=3s (repeatable)",
    )
    parser.add_argument("--id", help="node id (default: host-pid-random)")
    parser.add_argument(
        "--bind", type=address_type("--bind"), help="HOST:PORT to listen on (port 0: any free port)"
    )
    parser.add_argument("--cluster", help="cluster name")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="default: info")


def bind_overrides(options_class: type, bind: str) -> list[str]:
    """Turn --bind into the transport's own option names (bind, or host + port)."""
    names = {f.name for f in attrs.fields(options_class)}
    if "bind" in names:
        return [f"transport.bind={bind}"]
    host, _, port = bind.rpartition(":")
    if {"host", "port"} <= names:
        return [f"transport.host={host.strip('[]')}", f"transport.port={port}"]
    from ..errors import ConfigError

    raise ConfigError(
        f"--bind: the transport's options ({', '.join(sorted(names))}) have no bind address"
    )


def build_config(args: argparse.Namespace, registry: Registry) -> Config:
    overrides = list(args.overrides)
    if command_line_keys(overrides):
        log.warning("%s", COMMAND_LINE_WARNING)
    if args.id is not None:
        overrides.append(f"node.id={args.id}")
    if args.cluster is not None:
        overrides.append(f"node.cluster={args.cluster}")
    config = load_config(args.config, overrides=overrides, registry=registry)
    if args.bind is None:
        return config
    impl = registry.get("transport", config.transport.use)
    return load_config(
        args.config,
        overrides=overrides + bind_overrides(impl.options, args.bind),
        registry=registry,
    )


def describe_leader(event: LeaderChanged) -> str:
    lease = event.lease
    if lease is None:
        was = (
            f" (was {event.previous.holder}, token {event.previous.token})"
            if event.previous
            else ""
        )
        return f"leader: none{was}"
    return f"leader: {lease.holder} at {lease.address} token={lease.token}"


def describe_members(event: MembersChanged) -> str:
    parts = []
    if event.joined:
        parts.append("joined " + ", ".join(f"{m.id}@{m.address}" for m in event.joined))
    if event.left:
        parts.append("left " + ", ".join(f"{m.id}@{m.address}" for m in event.left))
    view = event.view
    return f"members: {'; '.join(parts)}; view {view.version} has {len(view)} members"


async def _log_events(node: Node) -> None:
    async for event in node.events():
        if isinstance(event, LeaderChanged):
            log.info("%s", describe_leader(event))
        elif isinstance(event, MembersChanged):
            log.info("%s", describe_members(event))


def install_echo_handlers(node: Node) -> None:
    """Out of the box, send and broadcast answer with the payload and who answered."""

    def echo(payload: Any) -> dict[str, Any]:
        return {"node": node.id, "payload": payload}

    node.on_send(echo)
    node.on_broadcast(echo)


DIE_WITH_PARENT = "HEDGEPLUG_DIE_WITH_PARENT"


async def _stop_when_parent_exits(scope: anyio.CancelScope) -> None:
    """With HEDGEPLUG_DIE_WITH_PARENT=1 (set by the demo, bench and test kit)
    the node stops gracefully once the process that started it is gone, so a
    parent killed without its own cleanup leaves no nodes behind. (Polling the
    parent id: Linux's parent-death signal follows the spawning *thread*, and
    async libraries spawn from worker threads that come and go.)"""
    parent = os.getppid()
    while os.getppid() == parent:
        await anyio.sleep(0.5)
    log.info("stopping: parent process %d exited", parent)
    scope.cancel()


async def serve(config: Config, registry: Registry) -> None:
    async with open_node(config, registry=registry) as node:
        install_echo_handlers(node)
        print(
            f"{READY_PREFIX}{node.address} id={node.id} cluster={node.cluster} pid={os.getpid()}",
            flush=True,
        )
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_log_events, node)
                if os.environ.get(DIE_WITH_PARENT) == "1":
                    tg.start_soon(_stop_when_parent_exits, tg.cancel_scope)
                async for signum in signals:
                    log.info(
                        "stopping on %s: leaving and releasing the lease",
                        signal.Signals(signum).name,
                    )
                    break
                tg.cancel_scope.cancel()
    log.info("stopped")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    registry = Registry.load()
    config = build_config(args, registry)
    run_async(serve, config, registry)
    return 0
