"""One OS process contending for a lock (used by the multi-process lock tests).

Usage: python -m tests.helpers.lock_contender <backend> <target> <lock> <name> <ttl> <seconds> <seed>
where backend is "sqlite" (target: database path). Prints the history of this
contender as one JSON document; times are the host's monotonic clock, which
all processes of one host share, so histories of several processes can be
merged and checked together.
"""

from __future__ import annotations

import json
import sys
import time
from random import Random

import anyio
import attrs

from hedgeplug.testing.lock_contract import History, contend


def _open(backend: str, target: str, lock: str):  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        from hedgeplug.lock.sqlite import open_lock

        return open_lock(target, lock, busy_timeout=2.0)
    raise SystemExit(f"unknown backend {backend!r}")


async def main(argv: list[str]) -> None:
    backend, target, lock_name, name, ttl, seconds, seed = argv
    lock = _open(backend, target, lock_name)
    history = History()
    # Start together: the parent hands every process the same start instant.
    start = float(sys.stdin.readline())
    await anyio.sleep(max(0.0, start - time.monotonic()))
    deadline = start + float(seconds)
    try:
        await contend(lock, name, float(ttl), deadline, history, Random(int(seed)), time.monotonic)
    finally:
        await lock.aclose()
    json.dump(attrs.asdict(history), sys.stdout)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
