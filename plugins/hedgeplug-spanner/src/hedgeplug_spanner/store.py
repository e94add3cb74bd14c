"""Access to one Spanner database from async code.

The Spanner client library blocks, so every call runs in a worker thread,
at most `threads` at a time per backend (a CapacityLimiter). A process keeps
one client per (project, endpoint) and one Database object per database, as
Google recommends: each holds gRPC channels and a session pool that are
costly to create.

Every call is bounded: queries carry an RPC timeout, read-write transactions
a retry deadline, and the async caller stops waiting after `timeout` whatever
the library does (the library's commit call takes no deadline of its own; an
abandoned thread finishes in the background and keeps its limiter slot until
then, so stuck calls cannot pile up).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from hedgeplug.plugin import StoreError

T = TypeVar("T")

_clients: dict[tuple[str, str], Any] = {}
_databases: dict[tuple[str, str, str, str], Any] = {}
_lock = threading.Lock()
# The emulator runs one read-write transaction at a time and answers a second
# one by dropping the first ("Transaction not found", which the client does
# not retry); so against the emulator this process runs them one by one.
_emulator_transactions = threading.Lock()


def _client(project: str, emulator_host: str | None) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import spanner

    key = (project, emulator_host or "")
    with _lock:
        client = _clients.get(key)
        if client is None:
            if emulator_host:
                # Anonymous credentials plus an endpoint make the library talk
                # plain-text gRPC to the emulator, as SPANNER_EMULATOR_HOST would.
                client = spanner.Client(
                    project=project, credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": emulator_host},
                    disable_builtin_metrics=True,
                )
            else:
                client = spanner.Client(project=project)
            _clients[key] = client
        return client


def shared_database(project: str, instance: str, database: str, emulator_host: str | None) -> Any:
    """The process-wide Database object for this database (created on first use)."""
    key = (project, emulator_host or "", instance, database)
    client = _client(project, emulator_host)
    with _lock:
        db = _databases.get(key)
        if db is None:
            db = client.instance(instance).database(database)
            _databases[key] = db
        return db


class SpannerStore:
    """Runs blocking work against one database in worker threads and turns
    the library's exceptions into StoreError naming the database."""

    def __init__(
        self,
        project: str,
        instance: str,
        database: str,
        *,
        emulator_host: str | None,
        timeout: float,
        threads: int = 4,
    ) -> None:
        self.project = project
        self.instance = instance
        self.database_id = database
        self.emulator_host = emulator_host
        self.timeout = timeout
        self.threads = threads
        self.path = f"projects/{project}/instances/{instance}/databases/{database}"
        if emulator_host:
            self.path += f" (emulator {emulator_host})"
        self._limiter: anyio.CapacityLimiter | None = None
        self._db: Any = None

    @property
    def database(self) -> Any:
        if self._db is None:
            self._db = shared_database(self.project, self.instance, self.database_id,
                                       self.emulator_host)
        return self._db

    async def run(self, what: str, work: Callable[[Any], T]) -> T:
        """Run `work(database)` in a worker thread, bounded by the call timeout."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        with anyio.move_on_after(self.timeout) as scope:
            return await anyio.to_thread.run_sync(
                self._guarded, what, work, limiter=self._limiter, abandon_on_cancel=True
            )
        if scope.cancelled_caught:
            raise StoreError(f"spanner {self.path}: {what} got no answer within {self.timeout:g}s")
        raise AssertionError("unreachable")

    def _guarded(self, what: str, work: Callable[[Any], T]) -> T:
        from google.api_core import exceptions as api

        try:
            return work(self.database)
        except StoreError:
            raise
        except api.GoogleAPIError as exc:
            # The first line says what went wrong; the rest echoes the SQL text.
            message = (getattr(exc, "message", None) or str(exc) or type(exc).__name__)
            message = message.splitlines()[0]
            raise StoreError(f"spanner {self.path}: {what} failed: {message}{_hint(message)}"
                             ) from exc
        except (ValueError, OSError) as exc:
            raise StoreError(f"spanner {self.path}: {what} failed: {exc}") from exc
        except Exception as exc:
            # google-auth raises its own error types for missing or bad credentials.
            if type(exc).__module__.startswith("google."):
                raise StoreError(f"spanner {self.path}: {what} failed: {exc}") from exc
            raise

    def transaction_slot(self) -> contextlib.AbstractContextManager[Any]:
        """Hold while running a read-write transaction (serialized only on the emulator)."""
        if not self.emulator_host:
            return contextlib.nullcontext()
        return _EmulatorSlot(self.timeout)

    async def aclose(self) -> None:
        # The client and its channels are shared by the whole process; nothing to free here.
        self._db = None


def _hint(message: str) -> str:
    text = message.lower()
    if "table not found" in text or "table" in text and "not found" in text:
        return (" (create the tables with the DDL in the hedgeplug-spanner README, "
                "or set create_table = true)")
    if "database not found" in text or "instance not found" in text:
        return " (check the project, instance and database options)"
    return ""


class _EmulatorSlot:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def __enter__(self) -> None:
        if not _emulator_transactions.acquire(timeout=self.timeout):
            raise StoreError("spanner emulator: waited too long for another read-write "
                             "transaction of this process to finish")

    def __exit__(self, *exc: object) -> None:
        _emulator_transactions.release()
