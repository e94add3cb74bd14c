"""The `hedgeplug` command.

Each subcommand is a module with `HELP` (one line), `add_arguments(parser)`
and `run(args) -> int`. COMMANDS maps the subcommand name to that module's
import path ("package.module", or "package.module:object" when one module
serves several commands) and its one-line help; other parts of hedgeplug
add theirs by adding a row. Only the chosen command's module is imported
(`hedgeplug run` loads neither the simulator nor the test kit, `--version`
no command at all); a missing optional module only makes its command
unavailable.

Exit status: 0 success; 1 a node could not be reached or refused the
request; 2 a user mistake (bad arguments, bad configuration, unknown plugin);
3 `status --ready`: the node answered but is not ready; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import HedgeplugError, NoLeader, RemoteError, TransportError

# name -> (import path, optional, help shown in the command list)
COMMANDS: dict[str, tuple[str, bool, str]] = {
    "run": ("hedgeplug.cli.run", False, "run one node in the foreground"),
    "status": ("hedgeplug.cli.status", False, "show a running node's view of the cluster"),
    "send": ("hedgeplug.cli.send", False, "send a payload to the leader through a node"),
    "broadcast": ("hedgeplug.cli.broadcast", False, "broadcast a payload to every member"),
    "kv": ("hedgeplug.cli.kv", False, "the key/value log: put, get, history, keys, trim"),
    "plugins": ("hedgeplug.cli.plugins", False, "list the installed plugins"),
    "demo": ("hedgeplug.cli.demo", False, "run a local cluster of node processes, live"),
    "keygen": ("hedgeplug.cli.keygen", False, "print a new random cluster key"),
    "tls-init": ("hedgeplug.cli.tls_init", False, "write a cluster CA and per-node TLS certificates"),
    "semaphore": ("hedgeplug.cli.semaphore", False, "show a semaphore's holders through a node"),
    "cache": ("hedgeplug.cli.cache", False, "read, write and inspect a partitioned cache through a node"),
    "sim": ("hedgeplug.cli.sim", True, "run a scenario on the deterministic simulator"),
    "bench": ("hedgeplug.cli.bench", True, "measure scenarios on real node processes"),
}

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _load_command(path: str, optional: bool) -> Any | None:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Hide only an optional command whose own module is absent.
        if optional and exc.name is not None and module_name.startswith(exc.name):
            return None
        if not optional:
            raise
        return _Unavailable(path, exc)
    except Exception as exc:
        if not optional:
            raise
        return _Unavailable(path, exc)  # a broken extra command must not break `run`
    target = getattr(module, attr, None) if attr else module
    if target is None or not hasattr(target, "add_arguments") or not hasattr(target, "run"):
        if optional:
            return None
        raise HedgeplugError(f"command module {path} lacks add_arguments/run")
    return target


class _Unavailable:
    """Stands in for an optional command whose module failed to import."""

    def __init__(self, path: str, error: BaseException) -> None:
        self.path = path
        self.error = f"{type(error).__name__}: {error}"
        self.HELP = f"(unavailable: {self.error})"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(self, args: argparse.Namespace) -> int:
        raise HedgeplugError(
            f"this command is unavailable: {self.path} failed to import: {self.error}"
        )


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is one), if any."""
    for word in argv:
        if word in COMMANDS:
            return word
        if not word.startswith("-"):
            return None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only the command it names has its module
    imported and its arguments added (the others show their help line)."""
    parser = argparse.ArgumentParser(
        prog="hedgeplug",
        description="Cluster coordination: a leader through a lease lock, one agreed member list.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"hedgeplug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    only = _chosen(argv) if argv is not None else None
    for name, (path, optional, summary) in COMMANDS.items():
        if argv is not None and name != only:
            sub.add_parser(name, help=summary, description=summary)
            continue
        command = _load_command(path, optional)
        if command is None:
            continue
        help_text = getattr(command, "HELP", summary)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(sp)
        sp.set_defaults(_command=command)
    return parser


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in exc.exceptions:
            leaves.extend(_leaf_errors(inner))
        return leaves
    return [exc]


def _classify(exc: BaseException) -> tuple[int, str] | None:
    """Exit status and message for errors a user can cause; None for real bugs."""
    leaves = _leaf_errors(exc)
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt):
            return EXIT_INTERRUPTED, "interrupted"
    for leaf in leaves:
        if isinstance(leaf, TransportError | RemoteError | NoLeader):
            return EXIT_UNREACHABLE, str(leaf)
        if isinstance(leaf, HedgeplugError):
            return EXIT_USAGE, str(leaf)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        return int(args._command.run(args) or 0)
    except SystemExit as exc:  # argparse's own usage errors exit 2 with a message
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BaseException as exc:
        verdict = _classify(exc)
        if verdict is None:
            raise
        status, message = verdict
        if status != EXIT_INTERRUPTED:
            print(f"hedgeplug: error: {message}", file=sys.stderr, flush=True)
        return status
