"""Config loading: defaults, precedence, and messages that name what was wrong."""

import pytest

from hedgeplug.config import load_config, parse_duration, parse_size
from hedgeplug.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "hedgeplug.toml"
    p.write_text(text)
    return p


def test_defaults_run_on_the_embedded_store():
    cfg = load_config(env={})
    assert (cfg.lock.use, cfg.transport.use, cfg.membership.use, cfg.broadcast.use) == (
        "sqlite", "tcp", "heartbeat", "direct",
    )
    assert cfg.election.ttl == 5.0
    assert cfg.node.lock == cfg.node.cluster


@pytest.mark.parametrize(
    "text,seconds",
    [("500ms", 0.5), ("3s", 3.0), ("1m", 60.0), ("1.5m", 90.0), ("2h", 7200.0), ("7", 7.0), (2, 2.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "3 sec", "-1s", "fast", True, -3])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sizes():
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("64KiB") == 65536
    assert parse_size(1500) == 1500
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")


def test_file_values_and_plugin_options(tmp_path):
    p = write(tmp_path, """
[node]
cluster = "orders"
meta = { zone = "a" }
[lock]
ttl = "3s"
margin = 0.3
[membership]
interval = "250ms"
missed = 4
""")
    cfg = load_config(p, env={})
    assert cfg.node.cluster == "orders"
    assert cfg.node.meta == {"zone": "a"}
    assert cfg.election.ttl == 3.0 and cfg.election.margin == 0.3
    assert cfg.election.renew_every == 0.75
    assert cfg.membership.options.interval == 0.25
    assert cfg.membership.options.missed == 4


def test_precedence_file_env_override(tmp_path):
    p = write(tmp_path, '[lock]\nttl = "3s"\n[membership]\nmissed = 4\n')
    env = {"HEDGEPLUG_LOCK_TTL": "4s", "HEDGEPLUG_MEMBERSHIP_MISSED": "5", "HEDGEPLUG_LOAD_PLUGINS": "x"}
    cfg = load_config(p, env=env, overrides=["lock.ttl=6s", "node.meta=a=1,b=2"])
    assert cfg.election.ttl == 6.0
    assert cfg.membership.options.missed == 5
    assert cfg.node.meta == {"a": "1", "b": "2"}


def test_unknown_key_names_file_section_key_and_allowed(tmp_path):
    p = write(tmp_path, '[lock]\ntll = "3s"\n')
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    text = str(info.value)
    assert str(p) in text and "[lock] tll" in text and "allowed keys" in text
    assert "ttl" in text and "margin" in text and "path" in text


def test_bad_value_names_key_and_what_is_allowed(tmp_path):
    p = write(tmp_path, '[lock]\nttl = "soon"\n[membership]\nmissed = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    text = str(info.value)
    assert "[lock] ttl" in text and "duration" in text
    assert "[membership] missed" in text and "integer" in text


def test_validator_failure_names_key(tmp_path):
    p = write(tmp_path, "[lock]\nmargin = 1.5\n")
    with pytest.raises(ConfigError, match=r"\[lock\] margin.*fraction"):
        load_config(p, env={})


def test_unknown_section_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"\[lokc\].*unknown section"):
        load_config(write(tmp_path, "[lokc]\nx = 1\n"), env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[lock\n"), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})


def test_unknown_plugin_lists_installed(tmp_path):
    p = write(tmp_path, '[lock]\nuse = "zookeeper"\n')
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    assert "no lock named 'zookeeper'" in str(info.value)
    assert "sqlite" in str(info.value)


def test_bad_env_value_names_variable():
    with pytest.raises(ConfigError, match="HEDGEPLUG_LOCK_TTL"):
        load_config(env={"HEDGEPLUG_LOCK_TTL": "forever"})


def test_bad_override_form():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(env={}, overrides=["ttl"])


# ------------------------------------------------------------ typed settings, one schema


def test_every_plugin_section_has_a_typed_core_read_the_same_way():
    from hedgeplug.config import CORE_SETTINGS, LockSettings, TransportSettings

    cfg = load_config(env={}, data={"lock": {"ttl": "2s", "renew": "250ms", "path": "x.db"}})
    assert isinstance(cfg.lock.core, LockSettings) and cfg.election.ttl == 2.0
    assert cfg.election.renew_every == 0.25 and cfg.lock.options.path == "x.db"
    assert isinstance(cfg.transport.core, TransportSettings) and cfg.transport.core.use == "tcp"
    assert set(CORE_SETTINGS) == {"lock", "transport", "membership", "broadcast"}
    # An unknown key lists the core keys and the plugin's keys alike.
    with pytest.raises(ConfigError, match=r"\[lock\] tll: unknown key.*margin.*path.*ttl"):
        load_config(env={}, data={"lock": {"tll": "2s"}})


def test_a_typed_flag_value_reaches_the_option_unparsed():
    from hedgeplug.address import Address
    from hedgeplug.config import Duration, Setting

    bind = Address("127.0.0.1", 0)
    cfg = load_config(
        env={},
        overrides=[Setting("transport", "bind", bind, "--bind"), Setting("lock", "ttl", Duration(2.0), "--ttl")],
    )
    assert str(cfg.transport.options.bind) == "127.0.0.1:0" and cfg.election.ttl == 2.0


def test_a_flag_and_a_set_of_the_same_key_is_an_error_naming_both():
    from hedgeplug.config import Duration, Setting

    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides=[Setting("lock", "ttl", Duration(3.0), "--ttl"), "lock.ttl=5s"])
    assert "--ttl" in str(info.value) and "--set lock.ttl" in str(info.value)
    assert "[lock] ttl" in str(info.value)


def test_a_flag_for_an_option_the_plugin_lacks_names_the_flag(tmp_path):
    from hedgeplug.address import Address
    from hedgeplug.config import Setting

    with pytest.raises(ConfigError) as info:
        load_config(
            env={},
            data={"transport": {"use": "memory"}},
            overrides=[Setting("transport", "bind", Address("127.0.0.1", 0), "--bind")],
        )
    assert "--bind [transport] bind: unknown key for transport 'memory'" in str(info.value)


def test_a_rendered_config_loads_back_equal(tmp_path):
    from hedgeplug.config import render_toml, write_config

    cfg = load_config(
        env={},
        data={
            "node": {"id": "n1", "cluster": "c", "meta": {"zone": "a b", "x": "\"q\""}, "seed": 4},
            "lock": {"ttl": "1500ms", "margin": 0.3, "path": str(tmp_path / "l.db")},
            "membership": {"use": "gossip", "seeds": ["127.0.0.1:1", "127.0.0.1:2"]},
            "transport": {"bind": "127.0.0.1:0"},
        },
    )
    path = write_config(cfg, tmp_path / "child.toml")
    assert (path.stat().st_mode & 0o777) == 0o600  # it may hold the cluster key
    again = load_config(path, env={})
    assert again.node == cfg.node
    for kind in ("lock", "transport", "membership", "broadcast"):
        assert again.section(kind) == cfg.section(kind), render_toml(cfg)
