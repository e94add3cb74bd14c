"""How a watch waits for the next append without polling the store.

Every append goes through the leader, so the leader knows the moment there
is something new: a watcher reads what the store has, then asks the leader
to answer once it appended past that (a held request, kv_leader.py) and
reads again. The lock backends' own notifications (Watchable) tell only
about the lease, not about log appends, so they cannot do this.

What bounds the wait: a change of leader ends it at once (the new leader
knows nothing of the old one's appends, so the watcher reads the store
again); otherwise it ends after `poll` seconds, a slow safety read that
catches what a lost answer or a leader that cannot hold requests (an older
version, a store without a log) missed.
"""

from __future__ import annotations

from typing import Any

import anyio

from ..errors import RemoteError, TransportError
from .kv_leader import KV_CHANNEL, LogLeader

ANSWER_MARGIN = 2.0  # seconds beyond the held time before the request counts as lost
# Requests a node holds open at the leader at once, however many watches it
# runs: each takes one of the leader's handler slots on the connection (64 by
# default), and puts need them too. A watch waiting for one loses nothing:
# the next append frees them all, and a request made after it returns at once.
HELD_AT_ONCE = 8


async def wait_for_append(
    election: Any, dispatcher: Any, leader: LogLeader, revision: int, poll: float, held: anyio.CapacityLimiter
) -> int | None:
    """Return once the leader appended past `revision` (with the newest
    revision it appended), or None when the leader changed or `poll` passed.

    Everything up to the revision returned is committed, so a read of the
    store after this returns sees it all."""
    answer: Any = None
    with anyio.move_on_after(poll):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_leader_changes, election, tg.cancel_scope)
            lease = election.leader
            if election.is_leader:
                answer = await leader.wait_for(revision, poll)
            elif lease is not None:
                request = {"op": "wait", "after": revision, "timeout": poll}
                try:
                    async with held:
                        answer = await dispatcher.request(lease.address, KV_CHANNEL, request, poll + ANSWER_MARGIN)
                except (RemoteError, TransportError, TimeoutError, OSError):
                    # Not (or no longer) the leader, unreachable, or it cannot hold
                    # requests: wait for a change of leader, at most until `poll`.
                    await election.wait_change()
            else:
                await election.wait_change()
            tg.cancel_scope.cancel()
    return answer if isinstance(answer, int) and not isinstance(answer, bool) and answer > revision else None


async def _until_leader_changes(election: Any, scope: anyio.CancelScope) -> None:
    await election.wait_change()
    scope.cancel()
