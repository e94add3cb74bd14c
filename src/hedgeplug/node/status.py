"""A node's status as the control protocol and `hedgeplug status` show it."""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from ..config import Config
from ..contracts import Lease
from ..view import View
from .parts import NodeParts
from .services import Services


class Reported(Protocol):
    """What a status report reads of its node."""

    id: str
    address: str
    cluster: str
    config: Config
    ctx: Any
    counters: dict[str, int]
    lifecycle: Any

    @property
    def started_at(self) -> float: ...

    @property
    def leader(self) -> Lease | None: ...

    @property
    def key_mismatch(self) -> str | None: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def view(self) -> View: ...

    @property
    def parts(self) -> NodeParts: ...

    @property
    def services(self) -> Services: ...


def node_status(node: Reported) -> dict[str, Any]:
    from ..health import liveness, verdict

    lease = node.leader
    view = node.view
    parts = node.parts
    stats = parts.transport.stats
    config = node.config
    mismatch = parts.election.keys.mismatch
    return {
        "id": node.id,
        "address": node.address,
        "cluster": node.cluster,
        "is_leader": node.is_leader,
        "leader": None if lease is None else {
            "id": lease.holder, "address": lease.address, "fingerprint": lease.fingerprint,
        },
        "token": lease.token if lease else 0,
        "newest_token": parts.election.newest_token,
        # Not None while this node's keys cannot verify the lease (it does not contend).
        "key_mismatch": None if mismatch is None else mismatch.to_json(),
        # Newest versions spoken, and the wire version sent to the view's members.
        "protocols": protocol_versions(node),
        "view_version": str(view.version),
        "view_digest": view.digest(),
        "members": [m.to_json() for m in view.live],
        "strategies": {
            "lock": config.lock.use,
            "transport": config.transport.use,
            "membership": config.membership.use,
            "broadcast": config.broadcast.use,
        },
        "ready": verdict(node)[1],
        "live": liveness(node)[1],
        "uptime": round(anyio.current_time() - node.started_at, 3),
        "counters": dict(sorted(node.counters.items())),
        "transport": {
            "frames_in": stats.frames_in,
            "frames_out": stats.frames_out,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "dropped": dict(stats.dropped),
        },
        "channels": {  # messages sent and handled per channel (replies not counted)
            name: dict(zip(("frames_in", "bytes_in", "frames_out", "bytes_out"), tally, strict=True))
            for name, tally in sorted(parts.dispatcher.traffic.items())
        },
        **node.services.stats(),
        "semaphores": _semaphores(node),
    }


def protocol_versions(node: Reported) -> dict[str, int]:
    versions = node.parts.dispatcher.versions
    codec = node.parts.dispatcher.codec
    return {
        "wire": codec.send_version,
        "wire_in_use": versions.in_use if versions is not None else codec.send_version,
        "control": node.ctx.control_version,
    }


def _semaphores(node: Reported) -> list[dict[str, Any]]:
    """The permits this node holds (the semaphore counters are in "counters")."""
    import sys

    # Only a node that has used a semaphore has loaded the state layer.
    state = sys.modules.get("hedgeplug.state.semaphore")
    return state.semaphore_snapshot(node) if state is not None else []
