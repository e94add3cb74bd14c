"""The broadcast contract over the built-in `direct` strategy on real nodes
over loopback tcp, and proof that it catches a strategy that breaks it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hedgeplug.broadcast.direct import DirectOptions
from hedgeplug.broadcast.direct import make as make_direct
from hedgeplug.plugin import Member, NodeContext, Reply, hookimpl
from hedgeplug.testing.broadcast_contract import (
    BroadcastContract,
    BroadcastUnderTest,
    broadcast_cluster,
    check_delivers_to_every_target,
    check_empty_targets,
    check_replies_as_they_arrive,
)


class TestDirect(BroadcastContract):
    @pytest.fixture
    def broadcast(self) -> BroadcastUnderTest:
        return BroadcastUnderTest("direct", {"concurrency": 8})


# ---------------------------------------------------------------- a broken strategy


class DropsOne:
    """`direct` that silently leaves out the last target."""

    def __init__(self, options: DirectOptions, ctx: NodeContext) -> None:
        self._direct = make_direct(options, ctx)

    async def deliver(
        self, channel: str, payload: Any, targets: Sequence[Member], timeout: float
    ) -> AsyncIterator[Reply]:
        async for reply in self._direct.deliver(channel, payload, targets[:-1], timeout):
            yield reply


class HoldsReplies:
    """`direct` that yields nothing until every target has answered."""

    def __init__(self, options: DirectOptions, ctx: NodeContext) -> None:
        self._direct = make_direct(options, ctx)

    async def deliver(
        self, channel: str, payload: Any, targets: Sequence[Member], timeout: float
    ) -> AsyncIterator[Reply]:
        replies = [r async for r in self._direct.deliver(channel, payload, targets, timeout)]
        for reply in replies:
            yield reply


class BrokenPlugin:
    @hookimpl
    def hedgeplug_register_broadcasts(self, register: Any) -> None:
        register("drops-one", DropsOne, DirectOptions)
        register("holds-replies", HoldsReplies, DirectOptions)


BROKEN = BroadcastUnderTest("drops-one", plugins=(BrokenPlugin(),))


@pytest.mark.anyio
async def test_a_strategy_that_drops_a_target_fails_delivery(tmp_path: Path) -> None:
    async with broadcast_cluster(BROKEN, tmp_path) as cluster:
        # What it does not break still passes: the plugin object was used.
        await check_empty_targets(cluster)
        with pytest.raises(AssertionError) as info:
            await check_delivers_to_every_target(cluster)
    assert "replies from" in str(info.value) and "b4" in str(info.value), info.value


@pytest.mark.anyio
async def test_a_strategy_that_holds_replies_back_fails_as_they_arrive(tmp_path: Path) -> None:
    holds = BroadcastUnderTest("holds-replies", plugins=(BrokenPlugin(),))
    async with broadcast_cluster(holds, tmp_path) as cluster:
        with pytest.raises(AssertionError) as info:
            await check_replies_as_they_arrive(cluster)
    assert "must be yielded as they arrive" in str(info.value), info.value
