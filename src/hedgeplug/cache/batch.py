"""Batched reads (`get_many`): one message per owner instead of one per key.

The reader answers from its own store the keys it owns, sends each other
owner one ["rm", [key, ...]] for the keys it would ask that owner first
(up to BATCH_KEYS a message, all owners at once), and reads the rest one
key at a time as `get` does: keys an owner missed, keys whose reply did not
fit the owner's frame limit, owners that failed or do not know "rm" (an
older version answers it as an unknown operation). So a batch returns what
the same keys' `get`s would, in fewer round trips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from hedgeplug.errors import HedgeplugError

from . import messages as m
from .versions import Version, version_from_wire

if TYPE_CHECKING:
    from .cache import Cache

BATCH_KEYS = 256  # keys one "rm" message carries at most
SINGLE_READS = 32  # one-key reads in flight at once for what the batches left
REPLY_MARGIN = 4096  # room the envelope and the reply's own framing take

Found = tuple[bytes | None, Version | None]


async def read_many(cache: Cache, keys: list[bytes]) -> dict[bytes, Found]:
    """{key: (packed value, version)} for every key: (None, version) for a
    delete, (None, None) for a miss."""
    found: dict[bytes, Found] = {}
    groups: dict[tuple[str, str], list[bytes]] = {}
    placement = cache.placement()
    view = cache.node.view
    unique = list(dict.fromkeys(keys))
    for key in unique:
        owners = placement.owners(key)
        if cache.node_id in owners:
            entry = cache.store.get(key)
            if entry is not None:
                cache.clock.observe(entry.version)
                found[key] = (entry.value, entry.version)
                continue
        first = next((o for o in owners if o != cache.node_id), None)
        member = None if first is None else view.get(first)
        if first is not None and member is not None:
            groups.setdefault((first, member.address), []).append(key)
    async with anyio.create_task_group() as tg:
        for (owner, address), group in groups.items():
            for start in range(0, len(group), BATCH_KEYS):
                tg.start_soon(_ask_owner, cache, owner, address, group[start : start + BATCH_KEYS], found)
    left = [key for key in unique if key not in found]  # the batches did not decide these
    if left:
        limiter = anyio.CapacityLimiter(SINGLE_READS)

        async def single(key: bytes) -> None:
            async with limiter:
                found[key] = await cache.client.read(key)

        async with anyio.create_task_group() as tg:
            for key in left:
                tg.start_soon(single, key)
    return found


async def _ask_owner(
    cache: Cache, owner: str, address: str, keys: list[bytes], found: dict[bytes, Found]
) -> None:
    try:
        reply = await cache.client.ask(owner, address, [m.READ_MANY, keys], cache.request_timeout)
    except (HedgeplugError, TimeoutError, OSError):
        return  # these keys are read one at a time, from every owner
    if not isinstance(reply, list) or len(reply) != 2 or reply[0] != "ok" or not isinstance(reply[1], list):
        return
    for key, answer in zip(keys, reply[1], strict=False):
        if not isinstance(answer, list) or not answer:
            continue
        try:
            if answer[0] == "hit" and len(answer) == 4 and isinstance(answer[1], bytes):
                version = version_from_wire(answer[2])
                cache.clock.observe(version)
                found[key] = (answer[1], version)
            elif answer[0] == "tomb":
                version = version_from_wire(answer[1])
                cache.clock.observe(version)
                found[key] = (None, version)
        except ValueError:
            continue  # a malformed version: this key is read on its own


def serve_read_many(cache: Cache, keys: Any) -> list[Any]:
    """The owner's answer to ["rm", keys]: one read answer per key, in order;
    ["skip"] for those past what one reply frame carries."""
    if not isinstance(keys, list) or len(keys) > BATCH_KEYS or not all(isinstance(k, bytes) for k in keys):
        raise ValueError(f"a batched read is [rm, [key, ...]] of at most {BATCH_KEYS} byte keys")
    room = cache.frame_limit - REPLY_MARGIN
    answers: list[Any] = []
    for key in keys:
        answer = cache.server.read(key)
        size = len(key) + 64 + (len(answer[1]) if answer[0] == "hit" else 0)
        if size > room:
            answer = ["skip"]
        else:
            room -= size
        answers.append(answer)
    return ["ok", answers]
