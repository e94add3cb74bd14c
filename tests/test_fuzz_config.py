"""Hostile configuration: arbitrary TOML-shaped tables, TOML text, environment
variables and --set strings. Loading either gives a Config or a ConfigError
whose message names what was wrong - never another exception (which the
command would show as a traceback).

Keys are drawn from the real option names of every registered implementation
(so values reach the converters and validators), mixed with unknown ones.
"""

from __future__ import annotations

import datetime
import tomllib
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hedgeplug
from hedgeplug import ConfigError, Registry

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REGISTRY = Registry.load()
SECTIONS = ("node", "lock", "transport", "membership", "broadcast")
KINDS = SECTIONS[1:]


def _option_names() -> dict[str, list[str]]:
    names: dict[str, set[str]] = {s: {"use"} for s in KINDS}
    default = hedgeplug.load_config(env={}, registry=REGISTRY)
    names["node"] = {f.name for f in attrs.fields(type(default.node))}
    names["lock"] |= {f.name for f in attrs.fields(type(default.lock.core))}
    for kind in KINDS:
        for use in REGISTRY.names(kind):
            names[kind] |= {f.name for f in attrs.fields(REGISTRY.get(kind, use).options)}
    return {s: sorted(n) for s, n in names.items()}


OPTION_NAMES = _option_names()
USES = {kind: REGISTRY.names(kind) for kind in KINDS}

toml_scalars = (
    st.text(max_size=12)
    | st.sampled_from(["3s", "500ms", "1m", "1MiB", "64KiB", "-1s", "0", "1e999", "nan", "127.0.0.1:0", "[::1]:0", ":", "a=b,c"])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.datetimes()
    | st.dates()
    | st.times()
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS) | st.text(max_size=6), max_size=5, unique=True)):
        keys = st.sampled_from(OPTION_NAMES.get(section, ["use"])) | st.text(max_size=8)
        body = draw(st.dictionaries(keys, toml_values, max_size=5) | toml_values)
        if section in KINDS and isinstance(body, dict) and draw(st.booleans()):
            body["use"] = draw(st.sampled_from(USES[section]) | toml_values)
        data[section] = body
    return data


def load(**kwargs: Any) -> None:
    kwargs.setdefault("env", {})
    try:
        config = hedgeplug.load_config(registry=REGISTRY, **kwargs)
    except ConfigError as exc:
        text = str(exc)
        assert text and "Traceback" not in text
        return
    assert isinstance(config, hedgeplug.Config)
    encodable(attrs.asdict(config, recurse=True))


def encodable(value: Any) -> None:
    """Every text in an accepted configuration can go on the wire (UTF-8)."""
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, dict):
        for k, v in value.items():
            encodable(k)
            encodable(v)
    elif isinstance(value, list | tuple):
        for v in value:
            encodable(v)


@FUZZ
@given(data=tables())
def test_arbitrary_tables_give_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    load(data=data)


# Lone surrogates are what argv and the environment give for bytes that are not UTF-8.
any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=16)
text_values = any_text | st.sampled_from(["3s", "1MiB", "none", "true", "1e999", "-5", "127.0.0.1:0", "a=b"])


@st.composite
def assignments(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    found = []
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from(SECTIONS) | st.text(max_size=5))
        key = draw(st.sampled_from(OPTION_NAMES.get(section, ["use"])) | st.text(max_size=6))
        value = draw(st.sampled_from(USES[section]) if key == "use" and section in USES else text_values)
        found.append((section, key, value))
    return found


@FUZZ
@given(items=assignments(), raw=st.lists(st.text(max_size=20), max_size=3))
def test_arbitrary_set_strings(items: list[tuple[str, str, str]], raw: list[str]) -> None:
    load(overrides=[f"{s}.{k}={v}" for s, k, v in items] + raw)


@FUZZ
@given(items=assignments(), junk=st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3))
def test_arbitrary_environment(items: list[tuple[str, str, str]], junk: dict[str, str]) -> None:
    env = {f"HEDGEPLUG_{s.upper()}_{k.upper()}": v for s, k, v in items}
    env.update({f"HEDGEPLUG_{k}": v for k, v in junk.items()})
    load(env=env)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=200)
    | st.lists(
        st.sampled_from(
            ["[node]", "[lock]", "[transport]", "[membership]", "[broadcast]", "[x]", "use = 'tcp'",
             "use = 'gossip'", "ttl = '3s'", "ttl = 1e400", "ttl = nan", "max_frame = -1", "bind = ':'",
             "id = ''", "key = 1", "meta = {a = 1}", "interval = [1]", "profile = 'zzz'", "seed = 2024-01-01"]
        ),
        max_size=8,
    ).map("\n".join),
    junk=st.just(b"") | st.binary(max_size=6),
)
def test_arbitrary_toml_files(tmp_path_factory: Any, text: str, junk: bytes) -> None:
    path = tmp_path_factory.mktemp("toml") / "hedgeplug.toml"
    path.write_bytes(text.encode() + junk)
    load(path=path)


def test_text_that_is_not_utf8_is_a_config_error() -> None:
    # Found by fuzzing: `--id $'a\xff'` gave a node that could never encode its id.
    for kwargs in ({"overrides": ["node.id=a\udcff"]}, {"env": {"HEDGEPLUG_NODE_CLUSTER": "\udcff"}}):
        try:
            hedgeplug.load_config(registry=REGISTRY, **{"env": {}, **kwargs})
        except ConfigError as exc:
            assert "UTF-8" in str(exc)
        else:
            raise AssertionError(f"{kwargs} accepted")


def test_unreadable_config_files_are_config_errors(tmp_path: Any) -> None:
    # Found by fuzzing: bytes that are not UTF-8 raised UnicodeDecodeError past the loader.
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[node]\nid = "caf\xe9"\n')
    for path, words in ((bad, "not UTF-8"), (tmp_path / ("x" * 300), "cannot be read")):
        try:
            hedgeplug.load_config(path, env={}, registry=REGISTRY)
        except ConfigError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{path} loaded")


def test_toml_date_and_time_values_are_refused_by_name() -> None:
    # TOML's own types that no option takes: a clear message, not a crash.
    for value in (datetime.datetime(2024, 1, 1), datetime.date(2024, 1, 1), datetime.time(1, 2)):
        try:
            hedgeplug.load_config(data={"lock": {"ttl": value}}, env={}, registry=REGISTRY)
        except ConfigError as exc:
            assert "ttl" in str(exc)
        else:
            raise AssertionError(f"{value!r} accepted as a ttl")
    assert tomllib.loads("a = 1979-05-27")  # the file form yields the same types
