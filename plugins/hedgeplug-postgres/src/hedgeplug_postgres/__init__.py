"""hedgeplug-postgres: a hedgeplug lock backend over PostgreSQL.

Select it with ``[lock] use = "postgres"``; see README.md for the options,
the table layout and what the database role needs.
"""

from __future__ import annotations

from typing import Any

from hedgeplug.plugin import ConfigError, NodeContext, hookimpl

from .lock import PostgresLock, PostgresOptions, WatchingPostgresLock, describe_dsn
from .schema import Statements

__all__ = [
    "PostgresLock", "PostgresOptions", "Statements", "WatchingPostgresLock", "make", "open_lock",
]


def make(options: PostgresOptions, ctx: NodeContext | _Standalone) -> PostgresLock:
    try:
        describe_dsn(options.dsn)
    except ValueError as exc:
        raise ConfigError(f"[lock] dsn: {exc}") from None
    kind = WatchingPostgresLock if options.watch else PostgresLock
    return kind(options, ctx.lock_name)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("postgres", make, PostgresOptions)


def open_lock(dsn: str, lock_name: str, **options: Any) -> PostgresLock:
    """A backend outside a node (scripts, tests): `options` are PostgresOptions keys."""
    return make(PostgresOptions(dsn=dsn, **options), _Standalone(lock_name))


class _Standalone:
    """The little of a NodeContext that make() reads."""

    def __init__(self, lock_name: str) -> None:
        self.lock_name = lock_name
        self.cluster = lock_name
        self.id = "standalone"
