"""Plugin-facing code imports core names only from hedgeplug.plugin, and the
shared validators name the offending key in configuration errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hedgeplug.plugin
from hedgeplug.config import load_config
from hedgeplug.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_CODE = [
    ROOT / "src/hedgeplug/lock",
    ROOT / "src/hedgeplug/membership",
    ROOT / "src/hedgeplug/broadcast",
    ROOT / "src/hedgeplug/transport",
    *sorted((ROOT / "plugins").glob("*/src")),
]


def _core_imports(path: Path) -> list[str]:
    """Modules of the hedgeplug package (other than hedgeplug.plugin) that `path` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n for n in names if _is_core(n)]
    return found


def _is_core(module: str) -> bool:
    # hedgeplug.testing is the kit for test code (a plugin's server launchers
    # and fixtures build on it); everything else comes through hedgeplug.plugin.
    if module == "hedgeplug.plugin" or module == "hedgeplug.testing" or module.startswith("hedgeplug.testing."):
        return False
    # Another built-in plugin is not core (broadcast `gossip` rides on the
    # gossip membership's notices), whatever package it sits in.
    if any(module.startswith(f"hedgeplug.{kind}.") for kind in ("lock", "membership", "broadcast", "transport")):
        return False
    return module == "hedgeplug" or module.startswith("hedgeplug.")


def test_plugin_code_imports_core_names_only_from_hedgeplug_plugin():
    files = [f for folder in PLUGIN_CODE for f in sorted(folder.rglob("*.py"))]
    assert len(files) > 20  # the scan really sees the plugins
    offenders = {str(f.relative_to(ROOT)): _core_imports(f) for f in files if _core_imports(f)}
    assert offenders == {}


def test_plugin_module_all_is_sorted_and_complete():
    names = hedgeplug.plugin.__all__
    assert list(names) == sorted(names)
    assert all(hasattr(hedgeplug.plugin, n) for n in names)


@pytest.mark.parametrize(
    ("section", "keys", "expected"),
    [
        ("lock", {"use": "sqlite", "busy_timeout": 0}, r"\[lock\] busy_timeout: must be greater than zero"),
        ("membership", {"use": "gossip", "probe_interval": "0s"}, r"\[membership\] probe_interval: must be greater than zero"),
        ("membership", {"use": "gossip", "indirect_checks": -1}, r"\[membership\] indirect_checks: must be at least 0"),
        ("membership", {"use": "heartbeat", "interval": 0}, r"\[membership\] interval: must be greater than zero"),
        ("membership", {"use": "heartbeat", "missed": 0}, r"\[membership\] missed: must be at least 1"),
        ("broadcast", {"use": "direct", "concurrency": 0}, r"\[broadcast\] concurrency: must be at least 1"),
    ],
)
def test_shared_validators_name_the_key(section, keys, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(data={section: keys}, env={})
