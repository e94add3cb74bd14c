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


def test_same_kind_and_name_twice_names_both_distributions_and_neither_is_selectable(site):
    site("hedgeplug-zk", {"zk": "hp_zk"}, {"hp_zk": LOCK_PLUGIN})
    site("other-zk", {"zk2": "hp_zk2"}, {"hp_zk2": LOCK_PLUGIN})
    reg = Registry.load()
    (failure,) = [f for f in reg.failures if "zk" in f.error]
    assert "hedgeplug-zk" in failure.error and "other-zk" in failure.error
    with pytest.raises(PluginError) as info:
        reg.get("lock", "zk")
    assert str(info.value) == failure.error
    # The config loader asks find() and then missing_message(): same message.
    assert reg.find("lock", "zk") is None
    assert reg.missing_message("lock", "zk") == failure.error
    assert "zk" not in reg.names("lock")


def test_conflict_between_in_process_plugins_names_both_distributions():
    @attrs.frozen
    class Opts:
        pass

    def plugin(label):
        class Plugin:
            @staticmethod
            @hookimpl
            def hedgeplug_register_transports(register):
                register("pigeon", lambda o, c: label, Opts)

        return Plugin

    reg = Registry()
    reg.add_plugin(plugin("a"), name="pigeon-a", distribution="hedgeplug-pigeon")
    reg.add_plugin(plugin("b"), name="pigeon-b", distribution="acme-pigeon")
    reg._collect()
    with pytest.raises(PluginError, match=r"hedgeplug-pigeon \(plugin 'pigeon-a'\) and by acme-pigeon"):
        reg.get("transport", "pigeon")


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


def test_missing_implementation_gets_a_generic_install_hint():
    # With nothing loaded, postgres is missing even where its plugin is installed.
    with pytest.raises(PluginError, match=r"pip install \./plugins/hedgeplug-postgres"):
        Registry.load(only=[]).get("lock", "postgres")
    with pytest.raises(PluginError, match=r"pip install \./plugins/hedgeplug-zookeeper"):
        Registry.load(only=[]).get("lock", "zookeeper")


def test_registry_source_names_no_plugin():
    import hedgeplug.registry

    source = open(hedgeplug.registry.__file__).read()
    for name in ("postgres", "etcd", "spanner"):
        assert name not in source


def test_load_plugins_switch_limits_what_loads(monkeypatch):
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "heartbeat")
    reg = Registry.load()
    assert reg.names("membership") == ["heartbeat"]
    assert reg.names("broadcast") == []
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "")
    assert Registry.load().implementations() == []


def test_load_plugins_accepts_the_names_hedgeplug_plugins_shows(monkeypatch, site):
    # `memory` is an implementation name; its entry points are memory-lock and memory-transport.
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "memory")
    reg = Registry.load()
    assert [(i.kind, i.name) for i in reg.implementations()] == [
        ("lock", "memory"), ("transport", "memory")]
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "memory-lock, direct")
    assert [i.name for i in Registry.load().implementations()] == ["memory", "direct"]
    site("hedgeplug-zk", {"zk": "hp_zk"}, {"hp_zk": LOCK_PLUGIN})
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "hedgeplug-zk")
    assert [i.name for i in Registry.load().implementations()] == ["zk"]


def test_load_plugins_by_name_skips_a_broken_plugin(monkeypatch, site):
    site("hedgeplug-broken", {"broken": "hp_broken"}, {"hp_broken": "raise RuntimeError('boom')\n"})
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "sqlite,heartbeat")
    reg = Registry.load()
    assert reg.failures == [] and reg.names("lock") == ["sqlite"]
    assert "hp_broken" not in sys.modules  # named by entry point: nothing else imported


def test_load_plugins_unknown_name_lists_what_exists(monkeypatch):
    monkeypatch.setenv("HEDGEPLUG_LOAD_PLUGINS", "sqlite,zookeeper")
    with pytest.raises(PluginError) as info:
        Registry.load()
    text = str(info.value)
    assert "'zookeeper'" in text
    assert "memory" in text and "memory-lock" in text and "hedgeplug" in text


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


def _plugin_with(hook_name, function):
    return type("P" + hook_name, (), {hook_name: staticmethod(function)})


def test_factory_result_is_checked_against_the_kind_contract():
    @attrs.frozen
    class NoOptions:
        pass

    class HalfLock:
        async def acquire(self, holder, address, ttl):
            return None

    class Broken:
        @staticmethod
        @hookimpl
        def hedgeplug_register_locks(register):
            register("none-lock", lambda o, c: None, NoOptions)
            register("half-lock", lambda o, c: HalfLock(), NoOptions)

    reg = Registry.load(only=[], extra=[Broken])
    with pytest.raises(PluginError) as info:
        reg.get("lock", "none-lock").create(NoOptions(), None)
    assert "returned None" in str(info.value) and "'none-lock'" in str(info.value)
    assert "(in process)" in str(info.value) and "LockBackend" in str(info.value)
    with pytest.raises(PluginError) as info:
        reg.get("lock", "half-lock").create(NoOptions(), None)
    text = str(info.value)
    assert "half-lock" in text and "lock" in text
    assert "renew(), release(), current(), aclose()" in text and "acquire()" not in text


def test_observers_run_in_pluggy_order_and_a_raising_one_does_not_stop_the_rest(caplog):
    from hedgeplug.hookspecs import hookimpl as impl

    calls = []

    class First:
        @staticmethod
        @impl(tryfirst=True)
        def hedgeplug_node_started(node):
            calls.append("first")

    class Last:
        @staticmethod
        @impl(trylast=True)
        def hedgeplug_node_started(node):
            calls.append("last")

    class Raising:
        @staticmethod
        @impl
        def hedgeplug_node_started(node):
            calls.append("raising")
            raise RuntimeError("observer bug")

    class Wrapper:
        @staticmethod
        @impl(wrapper=True)
        def hedgeplug_node_started(node):
            calls.append("wrap-before")
            result = yield
            calls.append("wrap-after")
            return result

    class OldWrapper:
        @staticmethod
        @impl(hookwrapper=True)
        def hedgeplug_node_started(node):
            calls.append("old-before")
            outcome = yield
            calls.append(f"old-after:{outcome.exception is None}")

    # Registered in an order that differs from the call order pluggy must produce.
    reg = Registry.load(only=[], extra=[Last, Raising, First, Wrapper, OldWrapper])
    node_a, node_b = reg.observers(), reg.observers()
    with caplog.at_level(logging.ERROR):
        node_a.call("hedgeplug_node_started", node="a")
    # pluggy calls later-registered wrappers first, then tryfirst, normal, trylast.
    assert calls == ["old-before", "wrap-before", "first", "raising", "last", "wrap-after",
                     "old-after:True"]
    assert "Raising" in caplog.text and "observer bug" in caplog.text and node_a.errors == 1
    calls.clear()
    node_a.call("hedgeplug_node_started", node="a")
    assert "raising" not in calls and "first" in calls and "last" in calls
    calls.clear()
    node_b.call("hedgeplug_node_started", node="b")  # another node: still enabled there
    assert "raising" in calls and node_b.errors == 1


def test_raising_hook_wrapper_is_disabled_and_the_observers_still_run(caplog):
    from hedgeplug.hookspecs import hookimpl as impl

    calls = []

    class BadWrapper:
        @staticmethod
        @impl(wrapper=True)
        def hedgeplug_node_stopping(node):
            raise ValueError("wrapper bug")
            yield  # pragma: no cover - makes this a generator

    class Plain:
        @staticmethod
        @impl
        def hedgeplug_node_stopping(node):
            calls.append("plain")

    observers = Registry.load(only=[], extra=[BadWrapper, Plain]).observers()
    with caplog.at_level(logging.ERROR):
        observers.call("hedgeplug_node_stopping", node=None)
        observers.call("hedgeplug_node_stopping", node=None)
    assert calls == ["plain", "plain"] and observers.errors == 1
    assert "BadWrapper" in caplog.text


def test_node_refuses_to_start_on_a_lock_factory_returning_none():
    import anyio

    import hedgeplug

    @attrs.frozen
    class NoOptions:
        pass

    class NoneLock:
        @staticmethod
        @hookimpl
        def hedgeplug_register_locks(register):
            register("none-lock", lambda o, c: None, NoOptions)

    reg = Registry.load(extra=[NoneLock])
    config = {
        "node": {"id": "n1", "cluster": "none-lock-test"},
        "lock": {"use": "none-lock"},
        "transport": {"use": "memory", "network": "none-lock-test"},
        "membership": {"use": "heartbeat"},
        "broadcast": {"use": "direct"},
    }

    async def main():
        with anyio.fail_after(10):
            async with hedgeplug.open_node(config, registry=reg):
                pytest.fail("the node started on a None lock")

    with pytest.raises(PluginError, match=r"'none-lock' returned None instead of a LockBackend"):
        anyio.run(main, backend="trio")
