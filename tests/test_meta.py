"""Keep the docs, the public API and the tests honest."""

import inspect
import pathlib
import re

import pytest

import hedgeplug
from hedgeplug import hookspecs

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("hedgeplug_"))


def test_public_api_is_pinned():
    assert sorted(hedgeplug.__all__) == sorted([
        "BlockingNode", "Config", "ConfigError", "HedgeplugError", "LeaderChanged", "Lease",
        "Member", "MemberState", "MembersChanged", "Message", "NoLeader", "Node", "PluginError",
        "Registry", "RemoteError", "Reply", "RequestTimeout", "StoreError", "TransportError",
        "View", "ViewVersion", "hookimpl", "load_config", "open_node",
    ])
    for name in hedgeplug.__all__:
        assert hasattr(hedgeplug, name)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_is_documented(hook):
    assert inspect.getdoc(getattr(hookspecs, hook))
    assert f"`{hook}(" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py"]
    assert any(re.search(rf"\b{hook}\b", s) for s in sources), f"no test mentions {hook}"
