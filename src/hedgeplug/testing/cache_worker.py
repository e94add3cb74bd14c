"""A node process with a cache: `hedgeplug run` plus `node.cache(NAME, ...)`.

    python -m hedgeplug.testing.cache_worker --config NODE.toml --cache scale \\
        --options '{"max_memory": "64MiB", "replicas": 2}'

`hedgeplug run` opens no cache (an application makes one on first use), so
the scaling benchmark and its test start this instead: the same node, ready
line and signal handling (SIGTERM: the cache hands its keys off, then the
node leaves; the parent's exit stops it too), with the cache made before the
ready line, so its channel is served (`hedgeplug cache get|set|stats NAME -a
ADDR` and the load generator reach it through any member).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

import anyio

from hedgeplug.cli.run import install_echo_handlers, parent_gone, parent_to_watch, ready_line
from hedgeplug.config import Config, load_config
from hedgeplug.logs import configured as logs_configured
from hedgeplug.node import open_node
from hedgeplug.registry import Registry

log = logging.getLogger("hedgeplug.testing.cache_worker")


async def _stop_when_parent_exits(parent: int, scope: anyio.CancelScope) -> None:
    while not parent_gone(parent):
        await anyio.sleep(0.2)
    log.info("stopping: parent process %d exited", parent)
    scope.cancel()


async def serve(
    config: Config, registry: Registry, cache: str, options: dict[str, Any], parent: int | None
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_node(config, registry=registry) as node:
            install_echo_handlers(node)
            node.cache(cache, **options)
            async with anyio.create_task_group() as tg:
                if parent is not None:
                    tg.start_soon(_stop_when_parent_exits, parent, tg.cancel_scope)
                print(ready_line(node), flush=True)
                async for signum in signals:
                    log.info("stopping on %s: handing off, leaving", signal.Signals(signum).name)
                    break
                tg.cancel_scope.cancel()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the node's TOML configuration")
    parser.add_argument("--cache", default="scale", help="the cache's name")
    parser.add_argument("--options", default="{}", help="the cache's options, as a JSON object")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        parser.error(f"--options is not JSON: {exc}")
    if not isinstance(options, dict):
        parser.error("--options must be a JSON object")
    parent = parent_to_watch()  # first: before anything can be printed
    with logs_configured(args.log_level, "text", every=30.0, stream=sys.stderr):
        registry = Registry.load()
        config = load_config(args.config, registry=registry)
        anyio.run(serve, config, registry, args.cache, options, parent, backend="trio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
