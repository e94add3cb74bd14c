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
from .errors import HedgeplugError
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

    @property
    def portal(self) -> BlockingPortal:
        """The portal into the node's event loop (for facades built on this one)."""
        if self._portal is None:
            raise HedgeplugError("the node is not started")
        return self._portal

    @property
    def node(self) -> Any:
        """The async `hedgeplug.Node` running in the background thread."""
        if self._node is None:
            raise HedgeplugError("the node is not started")
        return self._node

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

    @property
    def kv(self) -> Any:
        """The key/value log (state/kv_blocking.py): put, get, history, keys, trim, watch."""
        from .state.kv_blocking import BlockingKeyValueLog

        assert self._portal is not None, "the node is not started"
        return BlockingKeyValueLog(self._portal, self._node.kv)

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

    def semaphore(self, name: str, limit: int, *, watch: bool = True) -> Any:
        """The semaphore for threads: ``with node.semaphore("jobs", 3) as permit:``
        (the body is not interrupted; check permit.held, see docs/semaphore.md)."""
        from .state import blocking_semaphore

        return blocking_semaphore(self, name, limit, watch=watch)

    def cache(self, name: str, **options: Any) -> Any:
        """A named partitioned cache (see hedgeplug.cache); close it before the node."""
        from .cache.blocking import BlockingCache

        assert self._portal is not None, "the node is not started"
        return BlockingCache(self._portal, self._node, name, **options)
