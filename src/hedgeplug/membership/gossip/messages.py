"""What gossip messages look like on the wire, and the checks every payload
from a peer passes before the protocol looks at it.

Payloads are msgpack maps with a type under "t". A member record travels as
[id, address, meta, state, incarnation, origin], where origin is the node
that produced the record (it makes suspicion confirmations countable).
Anything malformed raises `BadPayload`, whose `reason` names the drop
counter ("gossip.drop.<reason>"); the protocol never trusts a field it has
not checked here.
"""

from __future__ import annotations

from typing import Any

import msgpack

from hedgeplug.plugin import Member, MemberState

PING = "ping"
ACK = "ack"
PING_REQ = "ping-req"
GOSSIP = "gossip"
PUSH_PULL = "pp"
DIGEST = "digest"
TYPES = frozenset({PING, PING_REQ, GOSSIP, PUSH_PULL, DIGEST})

MAX_TEXT = 512  # ids, addresses, metadata keys and values
MAX_META = 64
MAX_RECORDS = 20_000  # records in one full-state exchange
MAX_INCARNATION = 2**62
_STATES = {s.value: s for s in MemberState}


class BadPayload(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise BadPayload("record", f"{what} must be a non-empty string of at most {MAX_TEXT}")
    return value


def record_to_wire(member: Member, origin: str) -> list[Any]:
    return [
        member.id,
        member.address,
        dict(member.meta),
        member.state.value,
        member.incarnation,
        origin,
    ]


def record_from_wire(data: Any) -> tuple[Member, str]:
    """(member, origin) from one wire record; BadPayload if anything is off."""
    if not isinstance(data, list | tuple) or len(data) != 6:
        raise BadPayload("record", "a record is a 6-item list")
    mid, address, meta, state, incarnation, origin = data
    _text(mid, "id")
    _text(address, "address")
    _text(origin, "origin")
    if not isinstance(meta, dict) or len(meta) > MAX_META:
        raise BadPayload("record", f"meta must be a map of at most {MAX_META} entries")
    for k, v in meta.items():
        if (
            not isinstance(k, str)
            or not isinstance(v, str)
            or len(k) > MAX_TEXT
            or len(v) > MAX_TEXT
        ):
            raise BadPayload("record", "meta keys and values must be short strings")
    if not isinstance(state, str) or state not in _STATES:  # a list would raise TypeError
        raise BadPayload("record", f"unknown state {state!r}")
    if type(incarnation) is not int or not 0 <= incarnation < MAX_INCARNATION:
        raise BadPayload("record", "incarnation must be a non-negative integer")
    return Member(mid, address, meta, _STATES[state], incarnation), origin


def records_from_wire(data: Any, limit: int = MAX_RECORDS) -> tuple[list[tuple[Member, str]], int]:
    """Good records of a list and how many were bad (a bad record costs only itself)."""
    if data is None:
        return [], 0
    if not isinstance(data, list) or len(data) > limit:
        raise BadPayload("records", "records must be a list of bounded length")
    good: list[tuple[Member, str]] = []
    bad = 0
    for item in data:
        try:
            good.append(record_from_wire(item))
        except BadPayload:
            bad += 1
    return good, bad


def encoded_size(record: list[Any]) -> int:
    return len(msgpack.packb(record, use_bin_type=True))


def message_type(payload: Any) -> str:
    if not isinstance(payload, dict):
        raise BadPayload("shape", "payload is not a map")
    kind = payload.get("t")
    if not isinstance(kind, str) or kind not in TYPES:  # a list would raise TypeError
        raise BadPayload("type", f"unknown message type {kind!r}")
    return kind


def field_text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise BadPayload("field", f"{key!r} must be a short non-empty string")
    return value
