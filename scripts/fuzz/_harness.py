"""Shared bits of the atheris harnesses: driving a coroutine that never
really waits without an event loop, decoding fuzz bytes into a msgpack
value, and the entry point.

Each harness defines `one_input(data: bytes)`, which returns normally when
the decoder accepted or dropped the input with its documented drop error;
any other exception is a finding, and libFuzzer saves the input to
`crash-<hash>` (set -artifact_prefix= to choose where).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack


class Suspended(Exception):
    """The coroutine really waited on something: the harness cannot drive it."""


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that completes without suspending; its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise Suspended("the coroutine suspended")


def value_of(data: bytes) -> Any:
    """The msgpack value in `data` (any decode failure: the raw bytes themselves)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return data


def main(one_input: Callable[[bytes], None], inside_trio: bool = False) -> None:
    import atheris

    atheris.Setup(sys.argv, one_input)
    if inside_trio:
        # Some handlers create anyio events: they need a running loop, though
        # nothing ever waits on it (the fuzz loop blocks it, which is fine here).
        import trio

        async def run() -> None:
            atheris.Fuzz()

        trio.run(run)
    else:
        atheris.Fuzz()
