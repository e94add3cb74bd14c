"""Setting up an instance and database on the Cloud Spanner emulator, for
local development, tests and benchmarks (never used against real Spanner)."""

from __future__ import annotations

from .lock import lease_ddl, rows_ddl
from .log import log_ddl
from .store import _client

EMULATOR_INSTANCE_CONFIG = "emulator-config"


def create_emulator_database(
    emulator_host: str,
    project: str,
    instance: str,
    database: str,
    *,
    with_tables: bool = True,
    timeout: float = 60.0,
) -> None:
    """Create `instance` (if missing) and `database` on the emulator, with the
    hedgeplug tables unless `with_tables` is False."""
    client = _client(project, emulator_host)
    handle = client.instance(
        instance, configuration_name=f"projects/{project}/instanceConfigs/{EMULATOR_INSTANCE_CONFIG}",
        display_name=instance, node_count=1,
    )
    if not handle.exists():
        try:
            handle.create().result(timeout=timeout)
        except Exception as exc:  # created meanwhile by another caller
            if "already exists" not in str(exc).lower():
                raise
    ddl = ([lease_ddl("hedgeplug_lease"), rows_ddl("hedgeplug_rows"), *log_ddl("hedgeplug_lease")]
           if with_tables else [])
    handle.database(database, ddl_statements=ddl).create().result(timeout=timeout)
