"""Start-up: `import hedgeplug` and `hedgeplug --version` load only what they
need; every public name still resolves; a node's plugin loading does not
import the clients of lock stores it does not use."""

from __future__ import annotations

import subprocess
import sys

import hedgeplug


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return set(out.split())


def test_every_public_name_resolves() -> None:
    for name in hedgeplug.__all__:
        assert getattr(hedgeplug, name) is not None, name
    assert set(dir(hedgeplug)) >= set(hedgeplug.__all__)


def test_import_and_version_load_no_event_loop_nor_node() -> None:
    for code in ("import hedgeplug", "import hedgeplug.cli"):
        loaded = _modules_after(code)
        heavy = {"anyio", "attrs", "msgpack", "cryptography", "hedgeplug.node", "pluggy"}
        assert not heavy & loaded, f"{code} loaded {sorted(heavy & loaded)}"
    version = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "--version"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    assert version.stdout.strip() == f"hedgeplug {hedgeplug.__version__}"


def test_loading_the_plugins_imports_no_store_client() -> None:
    loaded = _modules_after("from hedgeplug.registry import Registry\nRegistry.load()")
    assert "psycopg" not in loaded and "httpx" not in loaded
    assert "hedgeplug_postgres" in loaded and "hedgeplug_etcd" in loaded  # they did load
