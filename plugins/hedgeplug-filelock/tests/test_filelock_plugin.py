"""The filelock backend as a user meets it: registration, configuration,
clear errors for bad paths and damaged files, fencing tokens kept in the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hedgeplug.config import load_config
from hedgeplug.errors import ConfigError, StoreError
from hedgeplug.registry import Registry

from hedgeplug_filelock import FileLockOptions, default_path, open_lock


def test_registered_through_the_entry_point() -> None:
    impl = Registry.load().get("lock", "filelock")
    assert impl.options is FileLockOptions


def test_config_reads_options_and_names_bad_ones(tmp_path: Path) -> None:
    path = str(tmp_path / "lease.json")
    config = load_config(
        data={"lock": {"use": "filelock", "path": path, "lock_timeout": "250ms"}}, env={}
    )
    assert config.lock.options == FileLockOptions(path=path, lock_timeout=0.25)
    for keys, expected in [
        ({"lock_timeout": 0}, r"\[lock\] lock_timeout: must be greater than zero"),
        ({"lock_timeout": "soon"}, r"\[lock\] lock_timeout"),
        ({"paht": path}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            load_config(data={"lock": {"use": "filelock", **keys}}, env={})


def test_default_path_is_per_user_and_per_cluster() -> None:
    path = default_path("my cluster/1")
    assert path.endswith(os.path.join(f"hedgeplug-{os.getuid()}", "my_cluster_1.json"))


def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "lease.json"
    with pytest.raises(StoreError, match=f"{path}: directory .* does not exist"):
        open_lock(str(path), "x")


def test_directory_as_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_lock(str(tmp_path), "x")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not json at all", "not a hedgeplug filelock file"),
        (json.dumps({"some": "other file"}).encode(), "not a hedgeplug filelock file"),
        (json.dumps({"format": "hedgeplug-filelock 1", "locks": {"x": {"holder": 1}}}).encode(), "damaged"),
    ],
)
async def test_foreign_or_damaged_file_is_a_clear_store_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "lease.json"
    path.write_bytes(content)
    lock = open_lock(str(path), "x")
    try:
        with pytest.raises(StoreError, match=expected):
            await lock.acquire("a", "addr", 1.0)
        with pytest.raises(StoreError, match=expected):
            await lock.current()
    finally:
        await lock.aclose()
    assert path.read_bytes() == content  # never overwritten


@pytest.mark.anyio
async def test_tokens_survive_reopening_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "lease.json")
    first = open_lock(path, "x")
    lease = await first.acquire("a", "addr-a", 5.0)
    assert lease is not None
    await first.release(lease)
    second = open_lock(path, "x")
    again = await second.acquire("b", "addr-b", 5.0)
    assert again is not None and again.token == lease.token + 1
