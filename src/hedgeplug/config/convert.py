"""Value conversion: a TOML value, an environment/flag text, or an already
typed flag value into the type an options field declares."""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs

from ..address import Address
from ..options import Duration, Size, parse_duration, parse_size


def field_types(cls: type) -> dict[str, Any]:
    attrs.resolve_types(cls)
    return {f.name: f.type for f in attrs.fields(cls)}


def describe_type(tp: Any) -> str:
    if tp is Duration:
        return "a duration like '500ms', '3s' or '1m'"
    if tp is Size:
        return "a size like 65536 or '1MiB'"
    if tp is Address:
        return "an address like '127.0.0.1:7946' or '[::1]:7946'"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(describe_type(a) for a in args) + " (or leave it out)"
    if origin is list:
        return "a list of " + describe_type(typing.get_args(tp)[0]) + "s"
    if origin is dict:
        return "a table of string keys to strings"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def convert(tp: Any, value: Any, *, from_text: bool) -> Any:
    """Turn a TOML value (or, with from_text, an env/flag string) into `tp`.
    A value that already has the type (a flag parsed by its argparse type)
    passes through unchanged."""
    if isinstance(value, str) and not value.isascii():
        try:  # bytes from argv or the environment that were not UTF-8 arrive as lone surrogates
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"expected UTF-8 text, got {value!r}") from None
    if tp is Duration:
        return parse_duration(value)
    if tp is Size:
        return parse_size(value)
    if tp is Address:
        return Address.parse(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(tp, value, from_text)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError(f"expected {describe_type(tp)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected {describe_type(tp)}, got {value!r}")
        return [convert(item, v, from_text=from_text) for v in value]
    if origin is dict:
        return _table(tp, value, from_text)
    if tp in _SCALARS:
        return _SCALARS[tp](value, from_text)
    if tp is Any:
        return value
    raise ValueError(f"unsupported option type {tp!r}")


def _union(tp: Any, value: Any, from_text: bool) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None and type(None) in typing.get_args(tp):
        return None
    if from_text and isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        return None
    for a in args:
        try:
            return convert(a, value, from_text=from_text)
        except ValueError:
            pass
    raise ValueError(f"expected {describe_type(tp)}, got {value!r}")


def _table(tp: Any, value: Any, from_text: bool) -> dict[str, str]:
    if from_text and isinstance(value, str):
        pairs = [p for p in value.split(",") if p.strip()]
        if not all("=" in p for p in pairs):
            raise ValueError(f"expected key=value pairs separated by commas, got {value!r}")
        value = dict(p.split("=", 1) for p in pairs)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"expected {describe_type(tp)}, got {value!r}")
    return {str(k).strip(): str(v).strip() for k, v in value.items()}


def _bool(value: Any, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int(value: Any, from_text: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if from_text and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _float(value: Any, from_text: bool) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if from_text and isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _str(value: Any, from_text: bool) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


_SCALARS: dict[Any, Any] = {bool: _bool, int: _int, float: _float, str: _str}


def describe_options(cls: type) -> list[dict[str, str]]:
    """Key, type description, default and help of an options class (for docs and `plugins`)."""
    out = []
    types_ = field_types(cls)
    for f in attrs.fields(cls):
        if f.default is attrs.NOTHING:
            default = "(required)"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = "(computed)"
        else:
            default = repr(str(f.default)) if isinstance(f.default, Address) else repr(f.default)
        out.append(
            {"key": f.name, "type": describe_type(types_[f.name]), "default": default,
             "help": f.metadata.get("help", "")}
        )
    return out
