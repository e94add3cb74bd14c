"""A small blocking facade for threaded programs.

The node runs on trio in a background thread (anyio's blocking portal);
each method blocks the calling thread until the node answers.

    with hedgeplug.BlockingNode("hedgeplug.toml") as node:
        node.on_send(lambda payload: payload.upper())
        print(node.send(b"hello"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .contracts import Lease, Reply
from .view import Member, View


class BlockingNode:
    def __init__(self, config: Any = None, *, overrides: Sequence[str] = (), backend: str = "trio") -> None:
        self._config = config
        self._overrides = overrides
        self._backend = backend
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._node_cm: Any = None
        self._node: Any = None

    def start(self) -> BlockingNode:
        from .node import open_node

        self._portal_cm = start_blocking_portal(self._backend)
        self._portal = self._portal_cm.__enter__()
        try:
            self._node_cm = self._portal.wrap_async_context_manager(
                open_node(self._config, overrides=self._overrides)
            )
            self._node = self._node_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        return self

    def close(self) -> None:
        if self._node_cm is not None:
            self._node_cm.__exit__(None, None, None)
            self._node_cm = None
        if self._portal_cm is not None:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None

    def __enter__(self) -> BlockingNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ API

    @property
    def id(self) -> str:
        return self._node.id

    @property
    def address(self) -> str:
        return self._node.address

    @property
    def is_leader(self) -> bool:
        return self._read(lambda: self._node.is_leader)

    @property
    def leader(self) -> Lease | None:
        return self._read(lambda: self._node.leader)

    @property
    def members(self) -> tuple[Member, ...]:
        return self._read(lambda: self._node.members)

    @property
    def view(self) -> View:
        return self._read(lambda: self._node.view)

    def _read(self, getter: Callable[[], Any]) -> Any:
        # Node state reads the event loop's clock, so read it on the loop's thread.
        assert self._portal is not None, "the node is not started"
        return self._portal.call(getter)

    def status(self) -> dict[str, Any]:
        assert self._portal is not None
        return self._portal.call(self._node.status)

    def send(self, payload: Any, timeout: float = 10.0) -> Any:
        assert self._portal is not None
        return self._portal.call(lambda: self._node.send(payload, timeout=timeout))

    def broadcast(self, payload: Any, **kwargs: Any) -> list[Reply]:
        assert self._portal is not None
        return self._portal.call(lambda: self._node.broadcast_all(payload, **kwargs))

    def wait_leader(self, timeout: float = 10.0) -> Lease:
        assert self._portal is not None
        return self._portal.call(lambda: self._node.wait_leader(timeout))

    def on_send(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """The handler runs in the node's thread: keep it short."""
        return self._node.on_send(handler)

    def on_broadcast(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        return self._node.on_broadcast(handler)

    # ------------------------------------------------------------ streams and spill-over stores

    def channel(self, name: str) -> Any:
        """The node's application channel; its handlers run on the node's thread."""
        return self._node.channel(name)

    def stream_to_leader(self, channel: str = "stream", payload: Any = None, timeout: float = 10.0) -> Any:
        """A BlockingStream to the leader (docs/streams.md)."""
        from .streams.blocking import BlockingStream

        assert self._portal is not None
        stream = self._portal.call(lambda: self._node.stream_to_leader(channel, payload, timeout=timeout))
        return BlockingStream(self._portal, stream)

    def stream_broadcast(self, channel: str = "stream", payload: Any = None, **kwargs: Any) -> Any:
        """A BlockingStreamBroadcast to every live member (docs/streams.md)."""
        from .streams.blocking import BlockingStreamBroadcast

        assert self._portal is not None
        fan = self._portal.call(lambda: self._node.stream_broadcast(channel, payload, **kwargs))
        return BlockingStreamBroadcast(self._portal, fan)

    def spill(self, name: str, **options: Any) -> Any:
        """`with node.spill("batch", ttl="10m") as store:` (docs/spill.md)."""
        from .spill.blocking import BlockingSpill

        assert self._portal is not None
        return BlockingSpill(self._portal, self._node, name, options)

    def serve_spill(self, **limits: Any) -> Any:
        """`with node.serve_spill(memory="256MiB", disk="4GiB"):` holds pieces for other writers."""
        from .spill.blocking import blocking_serve_spill

        assert self._portal is not None
        return blocking_serve_spill(self._portal, self._node, limits)
