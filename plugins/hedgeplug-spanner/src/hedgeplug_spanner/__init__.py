"""hedgeplug lock backend over Cloud Spanner: ``[lock] use = "spanner"``.

This module is the plugin (entry point ``spanner`` in the ``hedgeplug``
group): it holds the options of the [lock] section and registers the backend.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from hedgeplug.plugin import Duration, NodeContext, hookimpl, positive

from .lock import TABLE_NAME_RE, SpannerLock, lease_ddl, rows_ddl
from .log import log_ddl
from .store import SpannerStore

__all__ = [
    "SpannerLock", "SpannerOptions", "SpannerStore", "lease_ddl", "log_ddl", "make", "rows_ddl",
]


def _check_id(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value or any(c.isspace() or c == "/" for c in value):
        raise ValueError(f"'{attr.name}' must be a Spanner id without spaces or slashes, "
                         f"got {value!r}")


def _check_table(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not TABLE_NAME_RE.match(value):
        raise ValueError(f"'{attr.name}' {value!r} is not a valid table name (letters, digits "
                         "and underscores, starting with a letter)")


@attrs.frozen
class SpannerOptions:
    """[lock] keys for ``use = "spanner"``."""

    project: str = attrs.field(validator=_check_id, metadata={"help": "Google Cloud project id"})
    instance: str = attrs.field(validator=_check_id, metadata={"help": "Spanner instance id"})
    database: str = attrs.field(validator=_check_id, metadata={"help": "Spanner database id"})
    table: str = attrs.field(default="hedgeplug_lease", validator=_check_table,
                             metadata={"help": "lease table, one row per lock name; the "
                                               "key/value log uses <table>_log"})
    rows_table: str = attrs.field(default="hedgeplug_rows", validator=_check_table,
                                  metadata={"help": "table of the optional row storage"})
    emulator_host: str | None = attrs.field(
        default=None,
        metadata={"help": "host:port of a Spanner emulator; default: SPANNER_EMULATOR_HOST"},
    )
    create_table: bool = attrs.field(
        default=False, metadata={"help": "create missing tables on first use (needs DDL rights)"}
    )
    timeout: Duration = attrs.field(default=Duration(5.0), validator=positive,
                                    metadata={"help": "bound on one lock or row call"})
    ddl_timeout: Duration = attrs.field(default=Duration(300.0), validator=positive,
                                        metadata={"help": "bound on creating the tables"})
    watch_interval: Duration = attrs.field(default=Duration(0.25), validator=positive,
                                           metadata={"help": "how often watch() polls the row"})
    threads: int = attrs.field(default=4, validator=positive,
                               metadata={"help": "worker threads per backend for the client"})

    def __attrs_post_init__(self) -> None:
        if self.table == self.rows_table:
            raise ValueError("'rows_table' must differ from 'table'")


def make(options: SpannerOptions, ctx: NodeContext) -> SpannerLock:
    emulator = options.emulator_host or os.environ.get("SPANNER_EMULATOR_HOST") or None
    store = SpannerStore(options.project, options.instance, options.database,
                         emulator_host=emulator, timeout=options.timeout,
                         threads=options.threads)
    return SpannerLock(store, ctx.lock_name, table=options.table, rows_table=options.rows_table,
                       create_table=options.create_table, ddl_timeout=options.ddl_timeout,
                       watch_interval=options.watch_interval)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("spanner", make, SpannerOptions)
