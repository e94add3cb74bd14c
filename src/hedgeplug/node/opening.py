"""Opening a node: resolve its configuration, start it, stop it gracefully."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ..config import Config, load_config
from ..errors import HedgeplugError
from ..registry import Registry
from .api import Node

ConfigLike = Config | str | os.PathLike[str] | Mapping[str, Any] | None


def resolve_config(config: ConfigLike, registry: Registry, overrides: Sequence[str] = ()) -> Config:
    if isinstance(config, Config):
        if overrides:
            raise HedgeplugError("overrides apply when hedgeplug reads the configuration, not to a Config")
        return config
    if isinstance(config, Mapping):
        return load_config(data=config, overrides=list(overrides), registry=registry, env={})
    return load_config(config, overrides=list(overrides), registry=registry)


@asynccontextmanager
async def open_node(
    config: ConfigLike = None,
    *,
    registry: Registry | None = None,
    overrides: Sequence[str] = (),
) -> AsyncIterator[Node]:
    """Start a node and stop it gracefully when the block exits.

    `config` is a Config, a path to a TOML file, a dict shaped like the file,
    or None for the defaults (embedded sqlite lock, tcp, heartbeat, direct).
    """
    registry = registry or Registry.load()
    node = Node(resolve_config(config, registry, overrides), registry)
    await node.lifecycle.bind()
    async with anyio.create_task_group() as tg:
        try:
            await node.lifecycle.start(tg)
            yield node
        finally:
            with anyio.CancelScope(shield=True):
                await node.lifecycle.stop()
            tg.cancel_scope.cancel()
