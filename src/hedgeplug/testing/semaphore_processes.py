"""Real OS processes contending for one semaphore while some are killed.

    run = run_semaphore_processes(workdir, {"use": "sqlite", "path": db},
                                  processes=20, limit=3, seconds=20, kills=5)
    assert not check_semaphore_run(run, limit=3)

Each child opens a real node (the lock section given, tcp on loopback) and
loops acquire / hold / release on one semaphore. The holders themselves
record their holds, one JSON line each, flushed at once so a SIGKILL loses
nothing written: "enter" right after the semaphore handed them a slot (with
the slot, its fencing token and the permit's end of belief), "renew" when
that end moved on, "leave" with the last instant they checked the permit
and found it held. Times are the host's monotonic clock, which every process
of one host shares. A killed holder's hold ends at the earlier of its kill
and its last recorded end of belief. The parent kills holders (SIGKILL) at
random moments and checks the merged record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from random import Random
from typing import Any

import attrs

SEMAPHORE = "proc-jobs"
STEP = 0.02  # seconds between a holder's checks of its permit
PICK_WAIT = 3.0  # seconds the parent waits for a holder to kill or freeze


@attrs.define
class Hold:
    process: int
    slot: int
    token: int
    start: float
    end: float
    killed: bool = False
    lost: bool = False  # it found its permit no longer held before leaving
    written: float = 0.0  # when its "leave" record was written (after a thaw, for a frozen holder)


@attrs.define
class SemaphoreRun:
    holds: list[Hold]
    kills: dict[int, float]  # process -> monotonic time of its SIGKILL
    freezes: dict[int, float]  # process -> monotonic time of its SIGSTOP
    lost: int
    errors: list[str]


def run_semaphore_processes(
    workdir: Path,
    lock: dict[str, Any],
    *,
    processes: int = 20,
    limit: int = 3,
    seconds: float = 20.0,
    kills: int = 5,
    freezes: int = 0,
    hold: tuple[float, float] = (0.05, 0.3),
    ttl: float = 3.0,
    seed: int = 1,
    cluster: str = "semproc",
    start_timeout: float = 60.0,
) -> SemaphoreRun:
    """Run the children until `seconds` after they are all ready; bounded by
    start_timeout + seconds + 30. `kills` holders get SIGKILL; `freezes` holders
    get SIGSTOP for 1.5 ttl (past their lease), then SIGCONT. Each hold lasts
    uniformly within `hold` seconds."""
    rng = Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    outs = [workdir / f"holder-{i}.jsonl" for i in range(processes)]
    errs = [workdir / f"holder-{i}.err" for i in range(processes)]
    go = workdir / "go"
    killed: dict[int, float] = {}
    frozen: dict[int, float] = {}
    try:
        for i in range(processes):
            config = {
                "node": {"id": f"p{i}", "cluster": cluster, "stop_timeout": "2s", "seed": seed * 1000 + i},
                "lock": {**lock, "ttl": f"{ttl}s"},
                "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
                "membership": {"use": "heartbeat", "interval": "1s"},
            }
            with open(errs[i], "wb") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", __name__, json.dumps(config), str(outs[i]), str(go), str(limit),
                     json.dumps(list(hold))],
                    stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ),
                ))
        ready_by = time.monotonic() + start_timeout
        while not all(_ready(out) for out in outs):
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    raise AssertionError(f"holder {i} exited early ({p.returncode}):\n{errs[i].read_text()[-3000:]}")
            if time.monotonic() > ready_by:
                raise AssertionError(f"holders not ready within {start_timeout}s")
            time.sleep(0.1)
        end = time.monotonic() + seconds
        go.write_text(f"{end}\n")
        events = sorted(
            [(rng.uniform(seconds * 0.1, seconds * 0.8), "kill") for _ in range(kills)]
            + [(rng.uniform(seconds * 0.1, seconds * 0.5), "freeze") for _ in range(freezes)]
        )
        started = time.monotonic()
        for at, what in events:
            time.sleep(max(0.0, started + at - time.monotonic()))
            # Wait (briefly) for a process that is in its body; a kill then takes anyone.
            victim = None
            look_until = time.monotonic() + PICK_WAIT
            while victim is None and time.monotonic() < look_until:
                victim = _pick_holder(outs, procs, killed, rng, only_holders=True, avoid=frozen)
                if victim is None:
                    time.sleep(0.02)
            if victim is None and what == "kill":
                victim = _pick_holder(outs, procs, killed, rng, avoid=frozen)
            if victim is None:
                continue
            if what == "kill":
                procs[victim].send_signal(signal.SIGKILL)
                killed[victim] = time.monotonic()
            else:
                procs[victim].send_signal(signal.SIGSTOP)
                frozen[victim] = time.monotonic()
                time.sleep(ttl * 1.5)
                procs[victim].send_signal(signal.SIGCONT)
        for i, p in enumerate(procs):
            try:
                code = p.wait(timeout=max(1.0, end - time.monotonic()) + 30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"holder {i} overran its deadline") from None
            if i not in killed and code != 0:
                raise AssertionError(f"holder {i} exited with {code}:\n{errs[i].read_text()[-3000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return _merge(outs, killed, frozen)


def _ready(out: Path) -> bool:
    return out.exists() and out.stat().st_size > 0


def _records(out: Path) -> list[dict[str, Any]]:
    lines = out.read_text().splitlines() if out.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _pick_holder(
    outs: list[Path], procs: list[Any], killed: dict[int, float], rng: Random,
    *, only_holders: bool = False, avoid: dict[int, float] | None = None,
) -> int | None:
    """A live process whose last record is an "enter" or "renew" (it holds now),
    else (unless `only_holders`) any live one."""
    live = [i for i in range(len(procs)) if i not in killed and i not in (avoid or {}) and procs[i].poll() is None]
    holding = [i for i in live if (_records(outs[i]) or [{}])[-1].get("ev") in ("enter", "renew")]
    pool = holding if holding or only_holders else live
    return rng.choice(pool) if pool else None


def _merge(outs: list[Path], killed: dict[int, float], frozen: dict[int, float]) -> SemaphoreRun:
    holds: list[Hold] = []
    lost = 0
    errors: list[str] = []
    for i, out in enumerate(outs):
        current: Hold | None = None
        until = 0.0
        for rec in _records(out):
            ev = rec.get("ev")
            if ev == "enter":
                current = Hold(i, rec["slot"], rec["token"], rec["t"], rec["t"])
                until = rec["until"]
            elif ev == "renew" and current is not None:
                until = max(until, rec["until"])
            elif ev == "leave" and current is not None:
                current.end = rec["t"]
                current.lost = not rec.get("held")
                current.written = rec.get("written", rec["t"])
                lost += 1 if current.lost else 0
                holds.append(current)
                current = None
            elif ev == "error":
                errors.append(f"holder {i}: {rec.get('error')}")
        if current is not None:
            # Killed while holding: it acted at most until its kill or its belief's end.
            current.end = min(killed.get(i, until), until)
            current.killed = True
            holds.append(current)
    return SemaphoreRun(holds, killed, frozen, lost, errors)


def check_semaphore_run(run: SemaphoreRun, limit: int) -> list[str]:
    """Problems found: more than `limit` holds at once, a slot held twice at once,
    or a slot's fencing token not increasing from one holder to the next."""
    from hedgeplug.sim.semaphore_checks import max_overlap

    problems = list(run.errors)
    peak, at = max_overlap([(h.start, h.end) for h in run.holds])
    if peak > limit:
        problems.append(f"{peak} holders at once at monotonic {at:.3f}, limit {limit}")
    by_slot: dict[int, list[Hold]] = {}
    for h in run.holds:
        by_slot.setdefault(h.slot, []).append(h)
    for slot, holds in sorted(by_slot.items()):
        holds.sort(key=lambda h: h.start)
        for before, after in zip(holds, holds[1:], strict=False):
            if after.start < before.end:
                problems.append(f"slot {slot} held by {before.process} and {after.process} at once")
            if after.token <= before.token:
                problems.append(f"slot {slot}: token {after.token} after {before.token}")
    return problems


def assert_semaphore_run(
    run: SemaphoreRun, limit: int, ttl: float, *, slack: float = 1.0, min_holds: int = 30
) -> None:
    """check_semaphore_run finds nothing; the slots were really contended; and a
    holder killed while holding had its slot taken again within its lease ttl
    plus a waiter's retry period (ttl/4, jittered up to 1.5x) plus `slack`."""
    from hedgeplug.sim.semaphore_checks import max_overlap

    problems = check_semaphore_run(run, limit)
    assert not problems, problems[:10]
    peak, _ = max_overlap([(h.start, h.end) for h in run.holds])
    assert peak == limit, f"only {peak} holders at once: the run did not contend"
    assert len(run.holds) >= min_holds, f"only {len(run.holds)} holds"
    killed_holding = [h for h in run.holds if h.killed]
    assert killed_holding, "no holder was killed while holding"
    bound = ttl + ttl / 4 * 1.5 + slack
    gone = [(h, run.kills[h.process]) for h in killed_holding]
    for process, stopped in run.freezes.items():
        # A holder frozen past its lease stops believing; it must say so when it wakes.
        for h in run.holds:
            if h.process == process and h.start <= stopped < h.written:
                assert h.lost, f"holder {process} was frozen {ttl * 1.5:.1f}s while holding and did not lose its slot"
                gone.append((h, stopped))
    if run.freezes:
        assert len(gone) > len(killed_holding), "no freeze caught a holder in its body"
    for dead, died in gone:
        later = [h.start for h in run.holds if h.slot == dead.slot and h.start > died]
        if later:  # a kill near the end may leave the slot free until the run stops
            assert min(later) - died <= bound, f"slot {dead.slot} came back {min(later) - died:.2f}s after the holder went"


# ---------------------------------------------------------------- child


async def _child(config_json: str, out_path: str, go_path: str, limit: str, hold_json: str) -> None:
    import anyio

    from hedgeplug import open_node
    from hedgeplug.state import SemaphoreTimeout, close_semaphores, semaphore

    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(**fields: Any) -> None:
        os.write(fd, (json.dumps(fields) + "\n").encode())

    config = json.loads(config_json)
    rng = Random(config["node"]["seed"])
    shortest, longest = json.loads(hold_json)
    async with open_node(config) as node:
        sem = semaphore(node, SEMAPHORE, int(limit))
        offset = time.monotonic() - anyio.current_time()  # clock-ok: the record's shared host clock
        record(ev="ready", pid=os.getpid())
        while not os.path.exists(go_path) or not Path(go_path).read_text().endswith("\n"):
            await anyio.sleep(0.05)
        end = float(Path(go_path).read_text())
        try:
            while time.monotonic() < end:  # clock-ok: the parent's deadline
                try:
                    permit = await sem.acquire(timeout=max(0.01, end - time.monotonic()))  # clock-ok
                except SemaphoreTimeout:
                    break
                seen_until = permit.valid_until
                stop_at = anyio.current_time() + rng.uniform(shortest, longest)
                last_held: float | None = None
                while True:
                    # Read the clock BEFORE asking the permit: held at a later instant
                    # implies held at this one, even if the process was paused in between.
                    now = time.monotonic()  # clock-ok
                    if not permit.held:
                        break
                    if last_held is None:
                        record(ev="enter", t=now, slot=permit.slot, token=permit.token,
                               until=permit.valid_until + offset)
                    last_held = now
                    if anyio.current_time() >= stop_at:
                        break
                    if permit.valid_until != seen_until:
                        seen_until = permit.valid_until
                        record(ev="renew", until=seen_until + offset)
                    await anyio.sleep(STEP)
                if last_held is not None:
                    record(ev="leave", t=last_held, held=permit.held, written=time.monotonic())  # clock-ok
                await permit.release()
                await anyio.sleep(rng.uniform(0.0, 0.1))
        except Exception as exc:
            record(ev="error", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await close_semaphores(node)


if __name__ == "__main__":
    import anyio

    anyio.run(_child, *sys.argv[1:])  # type: ignore[arg-type]
