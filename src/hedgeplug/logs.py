"""Logging for operations, through the standard `logging` module.

    NodeFields     a filter adding node, cluster, token and view_version to
                   records logged while a node's tasks run (whatever logger)
    RepeatFilter   at most one identical warning per logger per `every`
                   seconds; the next one let through says how many were held
                   back: "... (repeated 37 times in 30s)"
    JsonFormatter  one JSON object per line
    configure      what `hedgeplug run --log-format text|json` installs

Embedded use: add the filters and the formatter to your own handler:

    handler = logging.StreamHandler()
    handler.addFilter(hedgeplug.logs.NodeFields())
    handler.addFilter(hedgeplug.logs.RepeatFilter(every=30))
    handler.setFormatter(hedgeplug.logs.JsonFormatter())
    logging.getLogger("hedgeplug").addHandler(handler)

A node marks its tasks with a context variable when it starts them, so
NodeFields knows which node logged a record even with many nodes in one
process; records from outside a node's tasks get no node fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

current_node: contextvars.ContextVar[Any] = contextvars.ContextVar("hedgeplug_node", default=None)

NODE_FIELDS = ("node", "cluster", "token", "view_version")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class NodeFields(logging.Filter):
    """Adds the logging node's id, cluster, leader token and view version."""

    def filter(self, record: logging.LogRecord) -> bool:
        node = current_node.get()
        if node is None or hasattr(record, "node"):
            return True
        record.node = node.id
        record.cluster = node.cluster
        try:  # reads the node's clock: only possible on its own event loop
            record.token = node.token
            record.view_version = str(node.view.version)
        except Exception:
            pass
        return True


class RepeatFilter(logging.Filter):
    """Lets one record per (logger, level, message template) through per
    `every` seconds at `level` and above; counts the rest and appends the
    count to the next one let through."""

    def __init__(self, every: float = 30.0, level: int = logging.WARNING, keys: int = 1024) -> None:
        super().__init__()
        self.every = every
        self.level = level
        self.keys = keys
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [window start, held back]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = record.created
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.every:
                entry[1] += 1
                return False
            if entry is not None and entry[1]:
                record.msg = f"{record.getMessage()} ... (repeated {int(entry[1])} times in {now - entry[0]:.0f}s)"
                record.args = ()
            if entry is None and len(self._seen) >= self.keys:
                self._seen.pop(next(iter(self._seen)))  # forget the oldest template
            self._seen[key] = [now, 0]
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger,
    message, the node fields when present, any `extra` values, and the
    formatted exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


HANDLER_NAME = "hedgeplug"  # the handler `configure` installs, so it can replace its own
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(
    level: str | int = "INFO",
    fmt: str = "text",
    *,
    every: float = 30.0,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Log to `stream` (stderr) as `fmt` ("text" or "json") with the node
    fields and repeated warnings held back for `every` seconds (0: never)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(NodeFields())
    if every > 0:
        handler.addFilter(RepeatFilter(every=every))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)  # configured again: replace, never stack
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


@contextlib.contextmanager
def configured(level: str | int = "INFO", fmt: str = "text", **kwargs: Any) -> Iterator[logging.Handler]:
    """`configure` for the length of a block; the root logger is put back after it."""
    root = logging.getLogger()
    level_before = root.level
    handler = configure(level, fmt, **kwargs)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level_before)
