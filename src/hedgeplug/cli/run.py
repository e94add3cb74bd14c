"""`hedgeplug run`: one node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import anyio

from ..address import Address
from ..config import Config, Setting, load_config
from ..events import LeaderChanged, MembersChanged, MemberUpdated
from ..keyring import COMMAND_LINE_WARNING, command_line_keys
from ..logs import configured as logs_configured
from ..node import Node, open_node
from ..readiness import DIE_WITH_PARENT, READY_PREFIX
from ..registry import Registry
from .common import address_type, duration_type, run_async

HELP = "run one node in the foreground (stops gracefully on SIGTERM/SIGINT)"
LEVELS = ("debug", "info", "warning", "error")

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
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="text lines or one JSON object per line (with node, cluster, token, view_version)",
    )
    parser.add_argument(
        "--log-repeat", type=duration_type, default=30.0, metavar="DURATION",
        help="show one identical warning per logger per this long, then how many were held back "
        "(default 30s; 0 shows all)",
    )
    parser.add_argument(
        "--health", type=address_type("--health"), metavar="HOST:PORT",
        help="serve /livez and /readyz over HTTP here (same as [health] listen)",
    )


def command_line_settings(args: argparse.Namespace) -> list[str | Setting]:
    """--set texts and the typed flags, in one list for the loader: a flag
    and a --set of the same key are an error naming both."""
    settings: list[str | Setting] = list(args.overrides)
    if args.id is not None:
        settings.append(Setting("node", "id", args.id, "--id"))
    if args.cluster is not None:
        settings.append(Setting("node", "cluster", args.cluster, "--cluster"))
    if getattr(args, "health", None) is not None:
        settings.append(Setting("health", "listen", args.health, "--health"))
    if args.bind is not None:
        # Whatever transport the configuration chooses, its options class
        # takes the address as its `bind` field; the loader says so if not.
        settings.append(Setting("transport", "bind", args.bind, "--bind"))
    return settings


def build_config(args: argparse.Namespace, registry: Registry) -> Config:
    if command_line_keys([o for o in args.overrides if isinstance(o, str)]):
        log.warning("%s", COMMAND_LINE_WARNING)
    return load_config(args.config, overrides=command_line_settings(args), registry=registry)


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


def describe_update(event: MemberUpdated) -> str:
    member, before = event.member, event.previous
    return (
        f"member updated: {member.id}@{member.address} meta {dict(before.meta)} -> {dict(member.meta)}"
    )


def describe_members(event: MembersChanged) -> str:
    parts = []
    if event.joined:
        parts.append("joined " + ", ".join(f"{m.id}@{m.address}" for m in event.joined))
    if event.left:
        parts.append("left " + ", ".join(f"{m.id}@{m.address}" for m in event.left))
    view = event.view
    return f"members: {'; '.join(parts)}; view {view.version} has {len(view)} members"


def log_events(node: Node) -> None:
    """Log leader and membership changes. Registered as callbacks at once,
    before the node's tasks first run, so even the first change is logged
    (an iterator task would subscribe only when it is first scheduled)."""
    node.on_leader_changed(lambda event: log.info("%s", describe_leader(event)))
    node.on_members_changed(lambda event: log.info("%s", describe_members(event)))
    node.on_member_updated(lambda event: log.info("%s", describe_update(event)))


def install_echo_handlers(node: Node) -> None:
    """Out of the box, send and broadcast answer with the payload and who answered."""

    def echo(payload: Any) -> dict[str, Any]:
        return {"node": node.id, "payload": payload}

    node.on_send(echo)
    node.on_broadcast(echo)


def parent_to_watch(environ: Mapping[str, str] = os.environ) -> int | None:
    """The pid whose exit stops this node: HEDGEPLUG_DIE_WITH_PARENT=<pid>
    (set by the demo, bench and test kit to their own pid), or "1" for "my
    parent as of now". Read when the command starts, before the ready line,
    so a parent that dies right after reading that line is still noticed."""
    value = environ.get(DIE_WITH_PARENT, "")
    if value == "1":
        return os.getppid()
    if value.isdigit():
        return int(value)
    return None


def parent_gone(parent: int) -> bool:
    # Once the parent exits, this process is re-parented (to init or a subreaper).
    return os.getppid() != parent


async def _stop_when_parent_exits(parent: int, scope: anyio.CancelScope) -> None:
    """Stop gracefully once `parent` is gone, so a parent killed without its
    own cleanup leaves no nodes behind. (Not Linux's parent-death signal: it
    follows the spawning *thread*, and async libraries spawn from worker
    threads that come and go.) A pidfd of the parent becomes readable when it
    exits, so the node sleeps until then; where there is none, it polls the
    parent id every 0.2 s."""
    pidfd = _open_pidfd(parent)
    try:
        while not parent_gone(parent):
            if pidfd is None:
                await anyio.sleep(0.2)
            else:
                await anyio.wait_readable(pidfd)
                await anyio.sleep(0.01)  # re-parenting follows the exit closely
    finally:
        if pidfd is not None:
            anyio.notify_closing(pidfd)
            os.close(pidfd)
    log.info("stopping: parent process %d exited", parent)
    scope.cancel()


def ready_line(node: Node) -> str:
    """The line parents wait for: the address other nodes and clients dial
    first (its shape is stable), then what the node listens on when that
    differs, and the health endpoint."""
    line = f"{READY_PREFIX}{node.address} id={node.id} cluster={node.cluster} pid={os.getpid()}"
    bound = bound_address(node)
    if bound is not None and bound != node.address:
        line += f" bound={bound}"
        log.info("listening on %s, advertised as %s", bound, node.address)
    if node.lifecycle.health_address:
        line += f" health=http://{node.lifecycle.health_address}/readyz"
    return line


def bound_address(node: Node) -> str | None:
    """host:port the transport listens on, when its options name a bind address."""
    bind, port = getattr(node.config.transport.options, "bind", None), getattr(node.parts.transport, "port", None)
    if not isinstance(bind, Address) or not isinstance(port, int):
        return None
    return str(bind.with_port(port))


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or already gone
        return None


async def serve(config: Config, registry: Registry, parent: int | None = None) -> None:
    if parent is not None and parent_gone(parent):
        log.info("not starting: parent process %d already exited", parent)
        return
    # Signals are caught and the parent watched before the ready line goes
    # out: a parent may signal or die the moment it has read it.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_node(config, registry=registry) as node:
            log_events(node)
            install_echo_handlers(node)
            async with anyio.create_task_group() as tg:
                if parent is not None:
                    tg.start_soon(_stop_when_parent_exits, parent, tg.cancel_scope)
                print(ready_line(node), flush=True)
                async for signum in signals:
                    log.info(
                        "stopping on %s: leaving and releasing the lease",
                        signal.Signals(signum).name,
                    )
                    break
                tg.cancel_scope.cancel()
    log.info("stopped")


def run(args: argparse.Namespace) -> int:
    parent = parent_to_watch()  # first: before anything can be printed
    # Scoped: when `run` is called in a process that goes on (a test), its
    # handler and level do not stay behind on the root logger.
    with logs_configured(args.log_level, args.log_format, every=args.log_repeat, stream=sys.stderr):
        registry = Registry.load()
        config = build_config(args, registry)
        run_async(serve, config, registry, parent)
    return 0
