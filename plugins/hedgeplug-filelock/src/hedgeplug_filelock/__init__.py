"""The `filelock` lock backend: its options, factory and registration.

    [lock]
    use = "filelock"
    path = "/run/myservice/lock.json"   # optional
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import attrs
from hedgeplug.plugin import ConfigError, Duration, NodeContext, StoreError, hookimpl, positive

from .lock import FileLock

__all__ = ["FileLock", "FileLockOptions", "default_path", "make", "open_lock"]


@attrs.frozen
class FileLockOptions:
    """[lock] keys for ``use = "filelock"``."""

    path: str = attrs.field(
        default="", metadata={"help": "lease file; default: one per cluster in a per-user temp dir"}
    )
    lock_timeout: Duration = attrs.field(
        default=Duration(1.0),
        validator=positive,
        metadata={"help": "how long one call waits while another process holds the file lock"},
    )


def default_path(cluster: str) -> str:
    """``<temp dir>/hedgeplug-<uid>/<cluster>.json``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", cluster) or "hedgeplug"
    return os.path.join(tempfile.gettempdir(), f"hedgeplug-{os.getuid()}", f"{safe}.json")


def open_lock(path: str, lock_name: str, *, lock_timeout: float = 1.0) -> FileLock:
    """A backend on `path`; StoreError at once when its directory is missing or unwritable."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"filelock store {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"filelock store {path}: directory {directory} is not writable")
    if os.path.isdir(path):
        raise StoreError(f"filelock store {path}: is a directory, expected a file")
    return FileLock(path, lock_name, lock_timeout=lock_timeout)


def make(options: FileLockOptions, ctx: NodeContext) -> FileLock:
    path = os.path.expanduser(options.path)
    if not path:
        path = default_path(ctx.cluster)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"filelock store {path}: cannot create its directory: {exc}") from exc
    elif "\0" in path:
        raise ConfigError(f"[lock] path: {path!r} contains a NUL character")
    return open_lock(path, ctx.lock_name, lock_timeout=options.lock_timeout)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("filelock", make, FileLockOptions)
