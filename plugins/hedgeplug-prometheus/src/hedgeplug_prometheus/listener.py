"""The fallback listener: /metrics on an address of its own.

When the node's health server serves /metrics (through the
`hedgeplug_http_routes` hook), nothing else is needed. Without one, set
HEDGEPLUG_METRICS_LISTEN=HOST:PORT: the first node of the process to start
opens prometheus_client's HTTP server there (in a thread of its own), and the
last one to stop closes it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from hedgeplug.plugin import Address, AddressError
from prometheus_client import REGISTRY, start_http_server

LISTEN_ENV = "HEDGEPLUG_METRICS_LISTEN"

log = logging.getLogger("hedgeplug.prometheus")


class Listener:
    """At most one fallback server per process."""

    def __init__(self) -> None:
        self._server: Any = None
        self._wanted = ""
        self._closing: threading.Thread | None = None
        self.address: tuple[str, int] | None = None  # where it listens, once open

    def open_if_asked(self, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
        wanted = environ.get(LISTEN_ENV, "").strip()
        if wanted == self._wanted and (self._server is not None or not wanted):
            return
        self.close()
        if not wanted:
            return
        try:
            address = Address.parse(wanted, what=LISTEN_ENV)
        except AddressError as exc:
            log.error("%s; /metrics is not served on a listener of its own", exc)
            return
        if self._closing is not None:  # the previous server must let go of its port first
            self._closing.join(timeout=2.0)
        try:
            server, _thread = start_http_server(address.port, addr=address.host, registry=REGISTRY)
        except OSError as exc:
            log.error("%s=%s: cannot listen there: %s", LISTEN_ENV, wanted, exc)
            return
        self._server, self._wanted = server, wanted
        host, port = server.server_address[:2]
        self.address = (str(host), int(port))
        log.info("metrics on http://%s/metrics", Address(str(host), int(port)))

    def close(self) -> None:
        server, self._server, self.address, self._wanted = self._server, None, None, ""
        if server is None:
            return

        def stop() -> None:  # shutdown() waits for the serving loop: not on an event loop
            server.shutdown()
            server.server_close()

        self._closing = threading.Thread(target=stop, name="hedgeplug-metrics-close", daemon=True)
        self._closing.start()
