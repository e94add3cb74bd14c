"""Paths plugins add to the node's health HTTP server (`hedgeplug_http_routes`).

The health server asks once, when it starts, with `plugin_routes(node)`, and
answers a GET of one of those paths with `answer(route)`, on the node's event
loop. A plugin cannot take the core's own paths, and a route that raises is
a 500 response, never a broken server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..hookspecs import Route, RouteResponse

log = logging.getLogger("hedgeplug.health")

CORE_PATHS = frozenset({"/livez", "/readyz"})


def plugin_routes(node: Any) -> dict[str, Route]:
    """Every valid path the node's plugins offer, mapped to its route."""
    routes: dict[str, Route] = {}
    for offered in node.observers.call("hedgeplug_http_routes", node=node):
        if not isinstance(offered, Mapping):
            log.warning("hedgeplug_http_routes returned %r, not a mapping of path to callable", offered)
            continue
        for path, route in offered.items():
            if not isinstance(path, str) or not path.startswith("/") or not callable(route):
                log.warning("route %r -> %r ignored: a path starts with '/' and maps to a callable", path, route)
            elif path in CORE_PATHS or path in routes:
                log.warning("route %s offered twice (or a core path); the first one stays", path)
            else:
                routes[path] = route
    return routes


def answer(route: Route) -> RouteResponse:
    """Call `route`; what it raised or returned malformed is a 500 response."""
    try:
        status, content_type, body = route()
        if not isinstance(status, int) or not isinstance(content_type, str) or not isinstance(body, bytes):
            raise TypeError(f"expected (int, str, bytes), got ({status!r}, {content_type!r}, {type(body).__name__})")
    except Exception as exc:
        log.exception("route %r failed", route)
        return 500, "text/plain; charset=utf-8", f"route failed: {type(exc).__name__}: {exc}\n".encode()
    return status, content_type, body
