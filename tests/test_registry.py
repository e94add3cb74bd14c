"""The plugin registry, exercised through real entry points: small
distributions written to a temporary folder on sys.path, found by
importlib.metadata exactly as an installed third-party plugin would be."""

import logging
import sys
import textwrap

import attrs
import pytest

from hedgeplug.errors import PluginError
from hedgeplug.hookspecs import hookimpl
from hedgeplug.registry import Registry


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Install throwaway distributions: site(dist, {entry_name: module}, {module: source})."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def install(dist, entry_points, modules):
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        lines = ["[hedgeplug]"] + [f"{k} = {v}" for k, v in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for name, source in modules.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
            created.append(name)

    yield install
    for name in created:
        sys.modules.pop(name, None)


LOCK_PLUGIN = """
    import attrs
    from hedgeplug.hookspecs import hookimpl

    @attrs.frozen
    class Opts:
        dsn: str = ""

    @hookimpl
    def hedgeplug_register_locks(register):
        register("zk", lambda options, ctx: object(), Opts)
"""


def test_builtins_come_through_entry_points():
    reg = Registry.load()
    kinds = {(i.kind, i.name): i.distribution for i in reg.implementations()}
    assert kinds[("membership", "heartbeat")] == "hedgeplug"
    assert kinds[("broadcast", "direct")] == "hedgeplug"


def test_third_party_plugin_is_found_with_its_distribution(site):
    site("hedgeplug-zk", {"zk": "hp_zk"}, {"hp_zk": LOCK_PLUGIN})
    impl = Registry.load().get("lock", "zk")
    assert impl.distribution == "hedgeplug-zk" and impl.version == "1.2.3"
    assert [f.name for f in attrs.fields(impl.options)] == ["dsn"]


def test_same_kind_and_name_twice_names_both_distributions(site):
    site("hedgeplug-zk", {"zk": "hp_zk"}, {"hp_zk": LOCK_PLUGIN})
    site("other-zk", {"zk2": "hp_zk2"}, {"hp_zk2": LOCK_PLUGIN})
    reg = Registry.load()
    messages = [f.error for f in reg.failures]
    assert any("registered twice" in m and "hedgeplug-zk" in m and "other-zk" in m for m in messages)


def test_broken_plugin_is_named_and_the_rest_keep_working(site, caplog):
    site("hedgeplug-broken", {"broken": "hp_broken"}, {"hp_broken": "raise RuntimeError('boom')\n"})
    with caplog.at_level(logging.WARNING):
        reg = Registry.load()
    assert reg.find("membership", "heartbeat") is not None
    (failure,) = [f for f in reg.failures if f.entry_point == "broken"]
    assert failure.distribution == "hedgeplug-broken" and "boom" in failure.error
    with pytest.raises(PluginError) as info:
        reg.get("lock", "nope")
    assert "hedgeplug-broken" in str(info.value)


def test_missing_name_lists_what_is_installed():
    with pytest.raises(PluginError) as info:
        Registry.load().get("lock", "zookeeper")
    text = str(info.value)
    assert "no lock named 'zookeeper'" in text and "sqlite" in text


def test_missing_known_backend_hints_its_distribution():
    # With nothing loaded, postgres is missing even where its plugin is installed.
    with pytest.raises(PluginError, match="pip install hedgeplug-postgres"):
        Registry.load(only=[]).get("lock", "postgres")


def test_load_plugins_switch_limits_what_loads(monkeypatch):
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "heartbeat")
    reg = Registry.load()
    assert reg.names("membership") == ["heartbeat"]
    assert reg.names("broadcast") == []
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "")
    assert Registry.load().implementations() == []


def test_options_must_be_attrs_classes():
    class Plugin:
        @staticmethod
        @hookimpl
        def hedgeplug_register_locks(register):
            register("bad", lambda o, c: None, dict)

    reg = Registry.load(only=[], extra=[Plugin])
    assert any("not an attrs class" in f.error for f in reg.failures)


def test_observer_that_raises_is_logged_with_its_name_and_disabled(caplog):
    calls = []

    class Noisy:
        @staticmethod
        @hookimpl
        def hedgeplug_node_started(node):
            calls.append("noisy")
            raise ValueError("observer bug")

    class Quiet:
        @staticmethod
        @hookimpl
        def hedgeplug_node_started(node):
            calls.append("quiet")

    reg = Registry.load(only=[], extra=[Noisy, Quiet])
    observers = reg.observers()
    with caplog.at_level(logging.ERROR):
        observers.call("hedgeplug_node_started", node=None)
        observers.call("hedgeplug_node_started", node=None)
    assert calls.count("noisy") == 1 and calls.count("quiet") == 2
    assert "Noisy" in caplog.text and observers.errors == 1


def test_each_registration_hook_registers_its_kind():
    @attrs.frozen
    class NoOptions:
        pass

    class Everything:
        @staticmethod
        @hookimpl
        def hedgeplug_register_locks(register):
            register("x-lock", lambda o, c: "lock", NoOptions)

        @staticmethod
        @hookimpl
        def hedgeplug_register_transports(register):
            register("x-transport", lambda o, c: "transport", NoOptions)

        @staticmethod
        @hookimpl
        def hedgeplug_register_memberships(register):
            register("x-membership", lambda o, c: "membership", NoOptions)

        @staticmethod
        @hookimpl
        def hedgeplug_register_broadcasts(register):
            register("x-broadcast", lambda o, c: "broadcast", NoOptions)

    reg = Registry.load(only=[], extra=[Everything])
    for kind in ("lock", "transport", "membership", "broadcast"):
        impl = reg.get(kind, f"x-{kind}")
        assert impl.factory(NoOptions(), None) == kind
