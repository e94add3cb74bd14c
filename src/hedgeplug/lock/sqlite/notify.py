"""Notice a change of lease holder without asking SQLite.

A writer that changes the holder or the token (acquire, release) touches a
marker file beside the database, ``<database>-changes``, after its commit
returns. Watching the database's own files would not do: in WAL mode a
commit writes its frames to ``-wal`` (an inotify event) but becomes visible
to readers only when the ``-shm`` index is updated afterwards, through a
memory map, which raises no event; a reader woken by the ``-wal`` write
can read the old row and then hear nothing more. The marker is touched
after the commit is visible, and renewals (which change neither holder nor
token) do not touch it, so they wake nobody.

On Linux, `FileChanges` is an inotify watch on the marker's directory
(the marker may not exist yet), filtered to its name. Elsewhere, or when the
kernel refuses another inotify instance (the per-user limit,
``fs.inotify.max_user_instances``, is 128 by default), the fallback
`StatPoller` compares the marker's inode and times on the event loop, every
`interval` after a change and up to every half second while none comes: no
thread and no query per poll.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from typing import Protocol

import anyio

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_CREATE | _IN_DELETE | _IN_MOVED_TO
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows

MARKER_SUFFIX = "-changes"


def marker_path(database: str) -> str:
    return database + MARKER_SUFFIX


def touch(database: str) -> None:
    """Tell the watchers of `database` that its holder or token changed."""
    marker = marker_path(database)
    try:
        os.utime(marker)
    except FileNotFoundError:
        try:
            with open(marker, "ab"):
                pass
        except OSError:
            pass  # watchers fall back on the lease expiry and their own polls
    except OSError:
        pass


class Changes(Protocol):
    def pending(self) -> bool: ...

    def fileno(self) -> int: ...

    async def wait(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


_LIBC = _libc() if os.uname().sysname == "Linux" else None


class FileChanges:
    """inotify on the directory of `database` for touches of its marker."""

    def __init__(self, database: str) -> None:
        if _LIBC is None:
            raise OSError("inotify is not available here")
        directory, base = os.path.split(os.path.abspath(marker_path(database)))
        self._names = {base.encode()}
        fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        if _LIBC.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, f"inotify_add_watch {directory}: {os.strerror(errno)}")
        self._fd: int | None = fd

    def fileno(self) -> int:
        return -1 if self._fd is None else self._fd

    def pending(self) -> bool:
        """Whether the marker was touched since the last call (never blocks)."""
        fd = self._fd
        if fd is None:
            return True
        changed = False
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return changed
            changed = self._relevant(data) or changed

    def _relevant(self, data: bytes) -> bool:
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW or name in self._names:
                return True
        return False

    async def wait(self, timeout: float) -> bool:
        """Until the marker is touched (True) or `timeout` seconds pass (False)."""
        with anyio.move_on_after(timeout):
            while True:
                if self.pending():
                    return True
                assert self._fd is not None
                await anyio.wait_readable(self._fd)
        return self.pending()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            anyio.notify_closing(fd)
            os.close(fd)


class StatPoller:
    """The fallback: stat the marker every `interval` after a change, the
    period doubling while nothing changes up to `longest` (at least
    `interval`): an idle watcher wakes twice a second instead of ten times,
    and a release is still seen within half a second."""

    def __init__(self, database: str, interval: float, longest: float = 0.5) -> None:
        self._path = marker_path(database)
        self._interval = interval
        self._longest = max(interval, longest)
        self._period = interval
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)

    def pending(self) -> bool:
        stamp = self._stamp()
        changed, self._seen = stamp != self._seen, stamp
        return changed

    async def wait(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while True:
                await anyio.sleep(self._period)
                if self.pending():
                    self._period = self._interval
                    return True
                self._period = min(self._period * 2, self._longest)
        return False

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def watch_changes(database: str, poll_interval: float) -> Changes:
    """inotify where it works, else the stat poller."""
    try:
        return FileChanges(database)
    except OSError:
        return StatPoller(database, poll_interval)
