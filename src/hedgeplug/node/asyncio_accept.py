"""A CPython asyncio race the node's listeners hit when they stop.

`BaseSelectorEventLoop._sock_accept` sets the result of its future without
checking whether that future was cancelled meanwhile (CPython issue
#153761). When a listener's accept is cancelled (the node stops) in the same
loop iteration in which a connection arrives, the loop reports
`InvalidStateError: invalid state` from `_sock_accept` to its exception
handler: noise in logs, and under anyio's pytest runner a failed test. The
connection it accepted is simply dropped (its peer sees it closed), which is
what a stopping listener does anyway. This module recognises exactly that
report and logs it at debug level; every other report goes to the handler
that was there before.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

log = logging.getLogger("hedgeplug.node")

_MARK = "_hedgeplug_tolerates_accept_race"


def tolerate_accept_race() -> None:
    """On a running asyncio loop, filter the `_sock_accept` race (once per loop)."""
    if "asyncio" not in sys.modules:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio (or no loop): nothing to do
        return
    if getattr(loop, _MARK, False):
        return
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_accept_race(context):
            log.debug("asyncio dropped a connection accepted while its listener stopped")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    setattr(loop, _MARK, True)


def _is_accept_race(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    if not isinstance(exc, asyncio.InvalidStateError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_sock_accept":
            return True
        tb = tb.tb_next
    return False
