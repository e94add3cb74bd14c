"""The gossip plugin as the registry and config see it: profiles, overrides, errors."""

from __future__ import annotations

import pytest

from hedgeplug import ConfigError, load_config
from hedgeplug.membership.gossip.settings import PROFILES, GossipOptions, resolve
from hedgeplug.registry import Registry

REGISTRY = Registry.load()


def test_registered_through_the_entry_point() -> None:
    impl = REGISTRY.get("membership", "gossip")
    assert impl.distribution == "hedgeplug" and impl.options is GossipOptions


def test_profiles_set_every_timing_and_memberlist_lan_defaults_hold() -> None:
    lan = resolve(GossipOptions())
    assert (lan.probe_interval, lan.probe_timeout, lan.suspicion_mult) == (1.0, 0.5, 4)
    assert (lan.gossip_interval, lan.gossip_nodes, lan.push_pull_interval) == (0.2, 3, 30.0)
    for name, values in PROFILES.items():
        settings = resolve(GossipOptions(profile=name))
        assert all(getattr(settings, k) == v for k, v in values.items())


def test_config_overrides_one_timing_and_keeps_the_rest() -> None:
    cfg = load_config(
        data={"membership": {"use": "gossip", "profile": "wan", "seeds": ["127.0.0.1:7000"]}},
        env={"HEDGEPLUG_MEMBERSHIP_HEAL": "false"},
        overrides=["membership.probe_timeout=750ms"],
        registry=REGISTRY,
    )
    settings = resolve(cfg.membership.options)
    assert settings.probe_timeout == 0.75 and settings.probe_interval == 5.0
    assert settings.heal is False and settings.seeds == ("127.0.0.1:7000",)


@pytest.mark.parametrize(
    "section, key",
    [
        ({"profile": "moon"}, "profile"),
        ({"probe_interval": "-1s"}, "probe_interval"),
        ({"gossip_nodes": 0}, "gossip_nodes"),
        ({"probe_intervall": "1s"}, "probe_intervall"),
    ],
)
def test_bad_options_name_the_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(data={"membership": {"use": "gossip", **section}}, env={}, registry=REGISTRY)
    assert key in str(info.value)
