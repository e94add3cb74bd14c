"""The parts a node is made of, built from the plugins its config names.

`NodeParts` is also the small named accessor through which tools that run
nodes (the simulator, tests) reach a node's plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import attrs

from ..channels import Dispatcher
from ..config import Config
from ..contracts import Lease
from ..election import Election
from ..errors import HedgeplugError
from ..keyring import keyring_for
from ..registry import Registry
from ..versions import WireVersions
from ..wire import Codec
from .context import NodeContext
from .metering import Meter


@attrs.frozen
class NodeParts:
    """One node's plugins and the core pieces wired to them."""

    lock: Any
    transport: Any
    dispatcher: Dispatcher
    election: Election
    membership: Any
    broadcast: Any


def build_plugin(kind: str, config: Config, registry: Registry, ctx: NodeContext) -> Any:
    """Build the `kind` plugin the config names (the one place a node calls a factory)."""
    section = getattr(config, kind)
    impl = registry.get(kind, section.use)
    try:
        return impl.create(section.options, ctx)
    except HedgeplugError:
        raise
    except Exception as exc:
        raise HedgeplugError(
            f"{kind} {section.use!r} from {impl.distribution} failed to start: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def assemble(
    config: Config,
    registry: Registry,
    ctx: NodeContext,
    *,
    counters: dict[str, int],
    address: Callable[[], str],
    on_leader_change: Callable[[Lease | None, Lease | None], None],
    meter: Meter | None = None,
) -> NodeParts:
    """Lock and transport first; then the core pieces the context speaks for;
    then membership and broadcast, which may open channels as they are built."""
    lock = build_plugin("lock", config, registry, ctx)
    transport = build_plugin("transport", config, registry, ctx)
    codec = Codec(
        config.node.cluster, keyring_for(config.node), transport.max_frame, send_version=ctx.wire_version
    )
    dispatcher = Dispatcher(transport, codec, config.node.id, counters, address)
    dispatcher.versions = WireVersions(ctx.wire_version, lambda: ctx.view, dispatcher.count)
    election = Election(
        meter.lock(lock) if meter is not None else lock,  # store calls timed only when observed
        config.election,
        holder=config.node.id,
        address=address,
        now=anyio.current_time,
        on_change=on_leader_change,
        count=dispatcher.count,
        random=ctx.random,
        keyring=lambda: codec.keyring,  # followed: a reloaded key file stamps the next renewal
    )
    ctx.connect(election, dispatcher, transport.stats)
    membership = build_plugin("membership", config, registry, ctx)
    broadcast = build_plugin("broadcast", config, registry, ctx)
    return NodeParts(lock, transport, dispatcher, election, membership, broadcast)
