"""Creates an instance and a database on the Spanner emulator through the admin API."""

from __future__ import annotations

import uuid

from hedgeplug_spanner.store import _client

PROJECT = "hedgeplug-test"


def create_database(emulator_host: str, *, ddl: list[str] | None = None) -> tuple[str, str]:
    """A fresh (instance, database) on the emulator; DDL applied when given."""
    client = _client(PROJECT, emulator_host)
    instance_id = "test-instance"
    instance = client.instance(
        instance_id, configuration_name=f"projects/{PROJECT}/instanceConfigs/emulator-config",
        display_name="hedgeplug tests", node_count=1,
    )
    if not instance.exists():
        try:
            instance.create().result(timeout=60)
        except Exception as exc:  # another test created it first
            if "already exists" not in str(exc).lower():
                raise
    database_id = f"db{uuid.uuid4().hex[:20]}"
    instance.database(database_id, ddl_statements=ddl or []).create().result(timeout=60)
    return instance_id, database_id
