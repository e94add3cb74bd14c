"""A node process for the chaos tests: `hedgeplug run` plus an application
that records its fencing tokens.

    python tests/chaos_worker.py --config NODE.toml --record NODE.jsonl

It opens a node with `hedgeplug.open_node`, installs the echo handlers of
`hedgeplug run`, prints the same ready line (so the test kit starts it like
any node) and stops on SIGTERM or when its parent is gone. Meanwhile the
"application" looks every TICK at whether the node believes it leads and,
while it does, appends one JSON line per look to its record file:

    {"e": "act", "t": T, "token": N, "until": U}   acting as leader with token N
    {"e": "leave", "t_enter": T0, "t_leave": T1, "token": N}   belief ended
    {"e": "stop", "t": T}                           graceful stop begins (release follows)

T is the host's CLOCK_MONOTONIC (`time.monotonic()`, shared by every
process on the host and every network namespace), read BEFORE the node is
asked, so at T the node already counted itself leader; U is when that
belief ends by the node's own clock, converted to the host clock. Each line
is one `write` on an O_APPEND descriptor: a SIGKILL loses nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import anyio

from hedgeplug import Registry, load_config, open_node
from hedgeplug.cli.run import install_echo_handlers, parent_gone, parent_to_watch
from hedgeplug.node import Node
from hedgeplug.readiness import READY_PREFIX

TICK = 0.01


class Recorder:
    """Appends one JSON object per line to the record file, each in one write."""

    def __init__(self, path: str, node_id: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.node_id = node_id

    def write(self, **fields: Any) -> None:
        line = json.dumps({"node": self.node_id, "pid": os.getpid(), **fields}) + "\n"
        os.write(self.fd, line.encode())


async def act_while_leading(node: Node, recorder: Recorder, tick: float) -> None:
    """The application: every tick, act (record) if the node believes it leads."""
    election = node.parts.election
    entered: tuple[int, float] | None = None  # (token, first act) of the open window
    last_act = 0.0
    while True:
        t = time.monotonic()  # before asking: at t the belief below already held
        snapshot = election.snapshot()
        lease = election.lease
        if snapshot["is_leader"] and lease is not None:
            until = time.monotonic() + snapshot["valid_for"]  # never earlier than the belief's end
            if entered is not None and entered[0] != lease.token:
                recorder.write(e="leave", t_enter=entered[1], t_leave=last_act, token=entered[0])
                entered = None
            if entered is None:
                entered = (lease.token, t)
            recorder.write(e="act", t=t, token=lease.token, until=until)
            last_act = t
        elif entered is not None:
            recorder.write(e="leave", t_enter=entered[1], t_leave=last_act, token=entered[0])
            entered = None
        await anyio.sleep(tick)


async def stop_when_parent_exits(parent: int, scope: anyio.CancelScope) -> None:
    while not parent_gone(parent):
        await anyio.sleep(0.2)
    scope.cancel()


async def serve(config_path: str, record_path: str, tick: float, parent: int | None) -> None:
    registry = Registry.load()
    config = load_config(config_path, registry=registry)
    recorder = Recorder(record_path, config.node.id)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_node(config, registry=registry) as node:
            install_echo_handlers(node)
            async with anyio.create_task_group() as tg:
                tg.start_soon(act_while_leading, node, recorder, tick)
                if parent is not None:
                    tg.start_soon(stop_when_parent_exits, parent, tg.cancel_scope)
                print(
                    f"{READY_PREFIX}{node.address} id={node.id} cluster={node.cluster} "
                    f"pid={os.getpid()}",
                    flush=True,
                )
                async for _ in signals:
                    break
                recorder.write(e="stop", t=time.monotonic())
                tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--tick", type=float, default=TICK)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    parent = parent_to_watch()
    anyio.run(serve, args.config, args.record, args.tick, parent, backend="trio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
