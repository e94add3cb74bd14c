"""atheris harness: the configuration loader on TOML text (as a file's
content would be), on the same text as --set lines and as environment
variables. Only ConfigError may come out.

    .venv/bin/python scripts/fuzz/fuzz_config.py -max_total_time=300 /tmp/corpus-config
"""

from __future__ import annotations

import tomllib

import atheris

with atheris.instrument_imports():
    from hedgeplug import ConfigError, Registry, load_config

from _harness import main

REGISTRY = Registry.load()


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        table = None
    lines = [line for line in text.splitlines() if line][:8]
    env = {f"HEDGEPLUG_{k.upper()}": v for k, _, v in (line.partition("=") for line in lines)}
    for kwargs in ({"data": table}, {"overrides": lines}, {"env": env}):
        if kwargs.get("data", {}) is None:
            continue
        kwargs.setdefault("env", {})
        try:
            load_config(registry=REGISTRY, **kwargs)  # type: ignore[arg-type]
        except ConfigError:
            pass


if __name__ == "__main__":
    main(one_input)
