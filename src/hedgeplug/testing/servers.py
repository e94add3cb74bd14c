"""Throwaway real servers for tests, found through the `hedgeplug.test_servers`
entry-point group, and the command that starts them for a whole test run.

The core names no server: each plugin distribution declares its launchers,

    [project.entry-points."hedgeplug.test_servers"]
    etcd = "hedgeplug_etcd.testing:start_etcd"

a callable `start(*, detached=False, **options) -> ServerHandle` (see
hedgeplug.testing.supervise). From a shell, all installed ones can be started
once for a whole test run:

    python -m hedgeplug.testing.servers up --state DIR [--only NAME,...]
    python -m hedgeplug.testing.servers down --state DIR

`up` writes DIR/servers.env (KEY=value lines, each server's `env_vars()`,
e.g. HEDGEPLUG_TEST_ETCD_ENDPOINTS), prints the same lines, and leaves the
servers running detached; `down` stops them and deletes their files.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .supervise import (
    LOOPBACK,
    ServerError,
    ServerHandle,
    detach,
    free_port,
    pid_alive,
    signal_and_wait,
    started,
)

__all__ = [
    "LAUNCHER_GROUP", "LOOPBACK", "ServerError", "ServerHandle", "free_port", "launcher",
    "launchers", "main", "pid_alive", "started",
]

LAUNCHER_GROUP = "hedgeplug.test_servers"

Launcher = Callable[..., ServerHandle]


def launchers() -> dict[str, md.EntryPoint]:
    """The installed launchers, by name (not imported yet)."""
    return {ep.name: ep for ep in sorted(md.entry_points(group=LAUNCHER_GROUP),
                                         key=lambda ep: ep.name)}


def launcher(name: str) -> Launcher:
    """The launcher called `name`; a ServerError naming the installed ones if none is."""
    found = launchers()
    if name not in found:
        raise ServerError(
            f"no test server named {name!r} is installed; installed: "
            f"{', '.join(found) or 'none'} (a plugin distribution declares its servers in "
            f"the {LAUNCHER_GROUP!r} entry-point group)"
        )
    start: Launcher = found[name].load()
    return start


# ---------------------------------------------------------------- command line


def _up(state: Path, names: Sequence[str]) -> int:
    state.mkdir(parents=True, exist_ok=True)
    state_file = state / "state.json"
    if state_file.exists():
        print(f"error: {state_file} exists; run `down --state {state}` first", file=sys.stderr)
        return 2
    handles: list[ServerHandle] = []
    try:
        for name in names:
            handles.append(launcher(name)(detached=True))
    except ServerError as exc:
        for handle in handles:
            handle.cleanup()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env: dict[str, str] = {}
    for handle in handles:
        env.update(handle.env_vars())
        detach(handle)  # they outlive this process on purpose
    state_file.write_text(json.dumps([h.to_state() for h in handles], indent=2))
    lines = [f"{key}={shlex.quote(value)}" for key, value in env.items()]  # sourceable by sh
    (state / "servers.env").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _down(state: Path) -> int:
    state_file = state / "state.json"
    if not state_file.exists():
        print(f"nothing to stop: {state_file} does not exist", file=sys.stderr)
        return 0
    for entry in json.loads(state_file.read_text()):
        if entry.get("pid"):
            signal_and_wait(int(entry["pid"]), int(entry["stop_signal"]), None)
        root = entry.get("root")
        if root and Path(root).name.startswith("hedgeplug-"):
            shutil.rmtree(root, ignore_errors=True)
    state_file.unlink()
    (state / "servers.env").unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    installed = list(launchers())
    parser = argparse.ArgumentParser(
        prog="python -m hedgeplug.testing.servers",
        description="Start or stop the throwaway test servers the installed plugins provide.",
    )
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", required=True, type=Path,
                        help="folder for state.json and servers.env")
    parser.add_argument("--only", default=",".join(installed),
                        help="comma-separated subset of: " + (", ".join(installed) or "(none)"))
    args = parser.parse_args(argv)
    if args.action == "down":
        return _down(args.state)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in installed]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(installed) or '(none installed)'}")
    return _up(args.state, names)


if __name__ == "__main__":
    sys.exit(main())
