"""hedgeplug-postgres: a hedgeplug lock backend over PostgreSQL.

Select it with ``[lock] use = "postgres"``; see README.md for the options,
the table layout and what the database role needs.

Every node loads this plugin to read its configuration, so this module
imports only the options; psycopg and the backend are imported when a
backend is made (or one of their names is first used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hedgeplug.plugin import ConfigError, NodeContext, hookimpl

from .options import PostgresOptions

if TYPE_CHECKING:
    from .lock import PostgresLock, WatchingPostgresLock, describe_dsn
    from .schema import Statements

__all__ = [
    "PostgresLock", "PostgresOptions", "Statements", "WatchingPostgresLock", "describe_dsn", "make",
    "open_lock",
]

_LAZY = {
    "PostgresLock": ".lock", "WatchingPostgresLock": ".lock", "describe_dsn": ".lock",
    "Statements": ".schema",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hedgeplug_postgres' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def make(options: PostgresOptions, ctx: NodeContext | _Standalone) -> PostgresLock:
    from .lock import PostgresLock, WatchingPostgresLock, describe_dsn

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
