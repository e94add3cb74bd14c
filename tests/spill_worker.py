"""A node process for the spill-over tests: serves spill and, as the writer,
writes a store.

    python tests/spill_worker.py --id a --lock LOCK.db --directory DIR \
        --memory 400000 --disk 200000 [--write NAME --chunks 15 --size 100000 --members 3]

It prints ``ready {"holders": ...}`` once it serves spill (and, as the
writer, once it saw --members members and appended --chunks chunks made by
`chunk_bytes`, printing where they went), then runs until stdin closes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

import anyio

import hedgeplug
from hedgeplug.spill import open_spill, serve_spill


def node_config(node_id: str, lock: str, cluster: str) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": cluster, "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": lock, "ttl": "2s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms", "missed": 3},
    }


def chunk_bytes(index: int, size: int) -> bytes:
    """Chunk `index` of a test store: its number, then bytes derived from it."""
    block = hashlib.sha256(str(index).encode()).digest()
    return (index.to_bytes(4, "big") + block * (size // len(block) + 1))[:size]


async def main(args: argparse.Namespace) -> None:
    async with hedgeplug.open_node(node_config(args.id, args.lock, args.cluster)) as node:
        async with serve_spill(node, memory=args.memory, disk=args.disk, directory=args.directory):
            if not args.write:
                print("ready {}", flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)
                return
            with anyio.fail_after(20):
                while len(node.view.ids) < args.members:
                    await anyio.sleep(0.05)
            async with open_spill(node, args.write, ttl="1m") as store:
                for i in range(args.chunks):
                    await store.append(chunk_bytes(i, args.size))
                print("ready " + json.dumps({"holders": store.holders()}), flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for option in ("--id", "--lock", "--directory", "--memory", "--disk", "--cluster"):
        parser.add_argument(option, required=True)
    parser.add_argument("--write")
    parser.add_argument("--chunks", type=int, default=0)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--members", type=int, default=1)
    anyio.run(main, parser.parse_args(), backend="trio")
