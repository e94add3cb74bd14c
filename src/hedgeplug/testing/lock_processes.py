"""Mutual exclusion across real OS processes: several processes run the lock
contract's `contend()` loop against one store at the same time, each prints
its history, and the parent merges and checks them.

    history = run_contender_processes(
        "hedgeplug.lock.sqlite:open_lock", {"path": db, "lock_name": "multi"},
        processes=6, seconds=3.0, ttl=0.25,
    )
    assert not check_history(history)

The opener is "module:function"; the function is called with the given
keyword arguments (JSON values) in each child and returns a LockBackend.
Times are the host's monotonic clock, which all processes of one host share,
so the merged history can be checked like one from a single process.
Bounded: each child stops at its deadline and is killed if it overruns.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from random import Random
from typing import Any

import anyio
import attrs

from .lock_contract import Grant, History, Observation, Release, Renewal, contend

READY_TIMEOUT = 60.0  # bound on every child interpreter importing and opening the store
START_DELAY = 0.2  # from the last child's "ready" to the common start instant


def run_contender_processes(
    opener: str,
    kwargs: dict[str, Any],
    *,
    processes: int = 6,
    seconds: float = 3.0,
    ttl: float = 0.25,
    min_grants: int = 0,
    min_holders: int = 0,
    max_rounds: int = 5,
) -> History:
    """Run `processes` contender processes for `seconds`; return their merged history.

    With `min_grants` / `min_holders`, further rounds of `seconds` (at most
    `max_rounds` in all) run on the same store until the history holds that
    many grants and distinct holders: a loaded machine slows the contenders
    down, and the check needs enough handovers to mean something. Rounds run
    one after another, so their merged history is checked as one.
    """
    merged = History()
    for _ in range(max_rounds):
        _merge_history(merged, _run_round(opener, kwargs, processes, seconds, ttl))
        if len(merged.grants) >= min_grants and len({g.holder for g in merged.grants}) >= min_holders:
            break
    return merged


def _merge_history(into: History, part: History) -> None:
    into.grants += part.grants
    into.renewals += part.renewals
    into.releases += part.releases
    into.observations += part.observations
    into.store_errors += part.store_errors
    into.calls += part.calls


def _run_round(
    opener: str, kwargs: dict[str, Any], processes: int, seconds: float, ttl: float
) -> History:
    with tempfile.TemporaryDirectory(prefix="hedgeplug-contenders-") as tmp:
        errs = [Path(tmp) / f"contender-{i}.err" for i in range(processes)]
        procs = []
        for i in range(processes):
            with open(errs[i], "w") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", __name__, opener, json.dumps(kwargs),
                         f"process-{i}", str(ttl), str(seconds), str(i)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                        text=True, env=dict(os.environ),
                    )
                )
        merged = History()
        try:
            # Start together once every child has opened the store (it says
            # "ready"), not after a guessed delay a loaded machine overruns.
            _wait_ready(procs, errs)
            start = time.monotonic() + START_DELAY
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{start}\n")
                p.stdin.close()
            for i, p in enumerate(procs):
                assert p.stdout is not None
                out = p.stdout.read()  # ends when the child exits at its deadline
                code = p.wait(timeout=START_DELAY + seconds + 30)
                if code != 0:
                    raise AssertionError(
                        f"contender process {i} exited with {code}:\n{errs[i].read_text()[-3000:]}"
                    )
                _merge(merged, json.loads(out))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return merged


def _wait_ready(procs: list[subprocess.Popen[str]], errs: list[Path]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    for i, p in enumerate(procs):
        assert p.stdout is not None
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, remaining))
        line = p.stdout.readline() if ready else None
        if line != "ready\n":
            why = "gave no ready line in time" if line is None else f"printed {line!r}"
            raise AssertionError(
                f"contender process {i} {why}:\n{errs[i].read_text()[-3000:]}"
            )


def _merge(into: History, part: dict[str, Any]) -> None:
    into.grants += [Grant(**g) for g in part["grants"]]
    into.renewals += [Renewal(**r) for r in part["renewals"]]
    into.releases += [Release(**r) for r in part["releases"]]
    into.observations += [Observation(**o) for o in part["observations"]]
    into.store_errors += part["store_errors"]
    into.calls += part["calls"]


async def _child(opener: str, kwargs: str, name: str, ttl: str, seconds: str, seed: str) -> None:
    module_name, _, function = opener.partition(":")
    lock = getattr(importlib.import_module(module_name), function)(**json.loads(kwargs))
    history = History()
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    await anyio.sleep(max(0.0, start - time.monotonic()))
    try:
        await contend(
            lock, name, float(ttl), start + float(seconds), history, Random(int(seed)),
            time.monotonic,
        )
    finally:
        await lock.aclose()
    json.dump(attrs.asdict(history), sys.stdout)


if __name__ == "__main__":
    anyio.run(_child, *sys.argv[1:])  # type: ignore[arg-type]
