"""A client for a running node's "control" channel, used by the command and
by the process test kit.

It is not a node: it joins no cluster and holds no lease. It builds the
configured transport from the registry, wraps one envelope per call with the
cluster's codec, and decodes the reply. Being in no view, it writes the
older wire version of the step (hedgeplug.versions), which every node of
the step reads and answers in; control requests carry its control protocol
version, and the node answers in that version.

    async with ControlClient(cluster="hedgeplug") as client:
        status = await client.status("127.0.0.1:41234")
"""

from __future__ import annotations

import logging
import os
from random import Random
from types import TracebackType
from typing import Any

import anyio

from .contracts import Transport
from .errors import HedgeplugError, RemoteError, RequestTimeout, TransportError
from .keyring import Keyring
from .registry import Registry
from .versions import (
    CONTROL_VERSION_ENV,
    CONTROL_VERSIONS,
    control_request,
    control_result,
    pinned,
)
from .wire import Codec, Envelope, Kind, WireError

CONTROL_CHANNEL = "control"


class _ClientContext:
    """The little a transport may ask of its owner when it only sends requests."""

    def __init__(self, client_id: str, cluster: str, settings: Any = None) -> None:
        self.id = client_id
        self.cluster = cluster
        self.lock_name = cluster
        self.meta: dict[str, str] = {}
        self.random = Random(int.from_bytes(os.urandom(8), "big"))
        self.log = logging.getLogger("hedgeplug.control")
        self.settings = settings
        self.counters: dict[str, int] = {}
        self.address = ""
        self.leader = None
        self.is_leader = False
        self.newest_token = 0

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


def client_transport_options(config: Any) -> Any:
    """The [transport] options a client of nodes configured by `config` must
    share with them (the tcp transport's TLS files), or None for the defaults."""
    options = config.transport.options
    return options if getattr(options, "tls_enabled", False) else None


class ControlClient:
    """Sends control operations ("status", "send", "broadcast") to nodes.

    `control_version`: the control protocol version requests carry (default:
    HEDGEPLUG_CONTROL_VERSION, else the newest)."""

    def __init__(
        self,
        *,
        cluster: str = "hedgeplug",
        key: str | Keyring = "",
        transport: str = "tcp",
        registry: Registry | None = None,
        transport_options: Any = None,
        control_version: int | None = None,
    ) -> None:
        """`transport_options`: the transport's options, default its defaults;
        given when the nodes' [transport] holds what a client needs too (TLS
        files). The client never binds."""
        self.cluster = cluster
        self.control_version = (
            pinned(CONTROL_VERSION_ENV, CONTROL_VERSIONS) if control_version is None else control_version
        )
        if self.control_version not in CONTROL_VERSIONS:
            raise HedgeplugError(
                f"control protocol version {self.control_version} is not one this command speaks {CONTROL_VERSIONS}"
            )
        self._registry = registry or Registry.load()
        impl = self._registry.get("transport", transport)
        self.client_id = f"control-{os.getpid()}-{os.urandom(3).hex()}"
        try:
            self._transport: Transport = impl.create(
                impl.options() if transport_options is None else transport_options,
                _ClientContext(self.client_id, cluster),
            )
        except HedgeplugError:
            raise
        except Exception as exc:
            raise HedgeplugError(
                f"transport {transport!r} from {impl.distribution} failed to start: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._codec = Codec(cluster, key, getattr(self._transport, "max_frame", 1 << 20))
        self._next_id = 0

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await self._transport.aclose()

    async def call(
        self,
        address: str,
        payload: Any,
        timeout: float,
        *,
        channel: str = CONTROL_CHANNEL,
        asked: float | None = None,
    ) -> Any:
        """One request on `channel` (the control channel unless told otherwise);
        RemoteError if the node's handler refused it, TransportError (or
        RequestTimeout) if the node could not be reached. `asked`: the timeout
        the user gave, when `timeout` adds travel time to it."""
        self._next_id += 1
        control = channel == CONTROL_CHANNEL
        if control:
            payload = control_request(payload, self.control_version)
        frame = self._codec.encode(
            Envelope(self.cluster, self.client_id, channel, self._next_id, Kind.MESSAGE, payload),
            self._codec.reads[0],  # in no view: the older version of the step, read by every node
        )
        try:
            with anyio.fail_after(timeout):
                raw = await self._transport.request(address, frame, timeout)
        except TransportError as exc:
            if str(exc).startswith("unreadable reply"):
                # Something answered, but not in frames: another service on that port.
                raise TransportError(
                    f"{address} is not a hedgeplug node: it answered, but not with hedgeplug frames ({exc})"
                ) from None
            raise
        except TimeoutError:
            waited = f"{asked:g}s (waited {timeout:g}s, allowing for the round trip)" if asked else f"{timeout:g}s"
            raise RequestTimeout(f"no answer from {address} within {waited}") from None
        except OSError as exc:
            raise TransportError(f"cannot reach {address}: {exc.strerror or exc}") from None
        if not raw:
            raise TransportError(
                f"{address} answered nothing: wrong cluster name or key, or not a hedgeplug node"
            )
        try:
            env = self._codec.decode(raw)
        except WireError as exc:
            raise TransportError(f"unreadable answer from {address}: {exc}") from None
        if env.kind is Kind.ERROR:
            raise RemoteError(f"{address}: {env.payload}")
        if control:
            return control_result(env.payload, self.control_version, address)
        return env.payload

    async def status(self, address: str, timeout: float = 3.0) -> dict[str, Any]:
        reply = await self.call(address, {"op": "status"}, timeout)
        if not isinstance(reply, dict):
            raise TransportError(f"{address} sent a malformed status")
        return reply

    async def send(self, address: str, payload: Any, timeout: float = 10.0) -> Any:
        """Ask the node at `address` to send `payload` to its leader; returns the leader's reply."""
        return await self.call(
            address, {"op": "send", "payload": payload, "timeout": timeout}, timeout + 2, asked=timeout
        )

    async def broadcast(
        self, address: str, payload: Any, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Ask the node at `address` to broadcast `payload`; returns one dict per member."""
        reply = await self.call(
            address, {"op": "broadcast", "payload": payload, "timeout": timeout}, timeout + 2,
            asked=timeout,
        )
        if not isinstance(reply, list):
            raise TransportError(f"{address} sent a malformed broadcast answer")
        return reply
