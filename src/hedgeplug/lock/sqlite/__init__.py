"""The embedded default lock store: one SQLite database file shared by the
processes of one host.

Modules: `store` (the connection, transactions and worker thread), `lock`
(the lease operations and the watcher), `rows` (the optional row storage),
`log` (the optional fenced key/value log);
this one holds the options, the factory and the registration.

Default path: ``$XDG_RUNTIME_DIR/hedgeplug/<cluster>.sqlite`` when that
variable is set, else ``<temp dir>/hedgeplug-<uid>/<cluster>.sqlite``; the
directory is created with mode 0700. An explicit ``path`` must be in an
existing, writable directory.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import attrs

from hedgeplug.plugin import ConfigError, Duration, NodeContext, StoreError, hookimpl, positive

from .lock import WATCH_INTERVAL, SqliteLock

__all__ = ["WATCH_INTERVAL", "SqliteLock", "SqliteOptions", "default_path", "make", "open_lock"]


@attrs.frozen
class SqliteOptions:
    """[lock] keys for ``use = "sqlite"``."""

    path: str = attrs.field(
        default="", metadata={"help": "database file; default: per-user runtime dir, one per cluster"}
    )
    busy_timeout: Duration = attrs.field(
        default=Duration(1.0),
        validator=positive,
        metadata={"help": "how long one call waits for another process's write lock"},
    )


def default_path(cluster: str) -> str:
    """The per-user default database file for `cluster` (see the module docstring)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", cluster) or "hedgeplug"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        directory = os.path.join(runtime, "hedgeplug")
    else:
        uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
        directory = os.path.join(tempfile.gettempdir(), f"hedgeplug-{uid}")
    return os.path.join(directory, f"{safe}.sqlite")


def open_lock(path: str, lock_name: str, *, busy_timeout: float = 1.0) -> SqliteLock:
    """A backend on `path`; raises StoreError when its directory is missing or unwritable."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"sqlite lock store {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"sqlite lock store {path}: directory {directory} is not writable")
    if os.path.isdir(path):
        raise StoreError(f"sqlite lock store {path}: is a directory, expected a database file")
    _check_header(path)
    return SqliteLock(path, lock_name, busy_timeout=busy_timeout)


def _check_header(path: str) -> None:
    """Refuse at start-up a file that is plainly not SQLite (one 16-byte read);
    damage further in shows up as a StoreError on the call that meets it."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return  # created on first use
    except OSError as exc:
        raise StoreError(f"sqlite lock store {path}: cannot read: {exc.strerror}") from None
    if header and header != b"SQLite format 3\x00":
        raise StoreError(f"sqlite lock store {path}: file exists but is not a SQLite database")


def make(options: SqliteOptions, ctx: NodeContext) -> SqliteLock:
    path = options.path
    if not path:
        path = default_path(ctx.cluster)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"sqlite lock store {path}: cannot create its directory: {exc}") from exc
    elif "\0" in path:
        raise ConfigError(f"[lock] path: {path!r} contains a NUL character")
    return open_lock(os.path.expanduser(path), ctx.lock_name, busy_timeout=options.busy_timeout)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("sqlite", make, SqliteOptions)
