"""The node filters one known CPython asyncio report (a cancelled accept
future given a result, CPython issue #153761) and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from hedgeplug.node.asyncio_accept import tolerate_accept_race


def _set_result_on_a_cancelled_future() -> None:
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    future.set_result(("conn", "address"))  # what the loop does in the race


def _sock_accept() -> None:  # named like the loop's callback
    _set_result_on_a_cancelled_future()


def _report_from(callback) -> dict:  # noqa: ANN001
    try:
        callback()
    except asyncio.InvalidStateError as exc:
        return {"message": "Exception in callback", "exception": exc}
    raise AssertionError("no InvalidStateError")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_only_the_accept_race_is_filtered(anyio_backend: str) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        tolerate_accept_race()
        tolerate_accept_race()  # once per loop: a second call does not wrap again
        handler = loop.get_exception_handler()
        assert handler is not None
        handler(loop, _report_from(_sock_accept))
        assert seen == []
        other = _report_from(_set_result_on_a_cancelled_future)
        handler(loop, other)
        assert seen == [other]
    finally:
        loop.set_exception_handler(before)
