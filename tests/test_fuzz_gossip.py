"""Hostile payloads against the gossip message checks (the decoders every
gossip payload passes before the protocol looks at it): anything a peer
sends either yields checked records or raises BadPayload naming a drop
counter - never TypeError, KeyError or the like.

The handlers themselves (protocol, heartbeat, control) are fuzzed on a real
node in test_fuzz_node.py. The internal decoders are imported in one place.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# -- the decoders under test (one place to update when modules move) ----------
from hedgeplug.membership.gossip.messages import (
    MAX_INCARNATION,
    MAX_META,
    MAX_TEXT,
    TYPES,
    BadPayload,
    field_text,
    message_type,
    record_from_wire,
    record_to_wire,
    records_from_wire,
)
from hedgeplug.view import Member, MemberState

# ------------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hashable = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    hashable,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(hashable, inner, max_size=5),
    max_leaves=15,
)
states = st.sampled_from([s.value for s in MemberState]) | values
texts = st.text(min_size=0, max_size=MAX_TEXT + 2) | values
incarnations = st.integers(-2, MAX_INCARNATION + 2) | values
metas = st.dictionaries(st.text(max_size=4) | hashable, st.text(max_size=4) | values, max_size=MAX_META + 2) | values
records = st.one_of(
    st.tuples(texts, texts, metas, states, incarnations, texts).map(list),
    st.lists(values, max_size=8),
    values,
)


def check_record(raw: Any) -> tuple[Member, str] | None:
    try:
        member, origin = record_from_wire(raw)
    except BadPayload as exc:
        assert exc.reason == "record"
        return None
    assert isinstance(member.id, str) and 0 < len(member.id) <= MAX_TEXT
    assert isinstance(member.address, str) and 0 < len(member.address) <= MAX_TEXT
    assert isinstance(origin, str) and 0 < len(origin) <= MAX_TEXT
    assert isinstance(member.state, MemberState)
    assert type(member.incarnation) is int and 0 <= member.incarnation < MAX_INCARNATION
    assert len(member.meta) <= MAX_META
    return member, origin


@FUZZ
@given(raw=records)
def test_record_decoder_checks_every_field(raw: Any) -> None:
    check_record(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.lists(records, max_size=6) | values)
def test_record_list_decoder_counts_bad_records(raw: Any) -> None:
    try:
        good, bad = records_from_wire(raw)
    except BadPayload as exc:
        assert exc.reason == "records"
        return
    assert len(good) + bad == (len(raw) if isinstance(raw, list) else 0)
    for member, origin in good:
        assert check_record(record_to_wire(member, origin)) == (member, origin)


@FUZZ
@given(
    payload=st.dictionaries(st.sampled_from(["t", "to", "addr", "u", "s", "join"]) | hashable, values, max_size=5)
    | st.fixed_dictionaries({"t": st.sampled_from(sorted(TYPES)) | values})
    | values
)
def test_message_type_and_fields(payload: Any) -> None:
    try:
        kind = message_type(payload)
    except BadPayload as exc:
        assert exc.reason in ("shape", "type")
        return
    assert kind in TYPES
    for key in ("to", "addr"):
        try:
            value = field_text(payload, key)
        except BadPayload as exc:
            assert exc.reason == "field"
        else:
            assert isinstance(value, str) and 0 < len(value) <= MAX_TEXT


@settings(max_examples=200, deadline=None)
@given(
    mid=st.text(min_size=1, max_size=20),
    address=st.text(min_size=1, max_size=20),
    meta=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=5),
    state=st.sampled_from(list(MemberState)),
    incarnation=st.integers(0, MAX_INCARNATION - 1),
)
def test_records_round_trip(mid: str, address: str, meta: dict[str, str], state: MemberState, incarnation: int) -> None:
    member = Member(mid, address, meta, state, incarnation)
    assert record_from_wire(record_to_wire(member, "o")) == (member, "o")


def test_unhashable_state_and_type_are_drops_not_type_errors() -> None:
    # Found by the properties above: `[] in {...}` raises TypeError.
    for raw in (["a", "b", {}, [], 0, "o"], ["a", "b", {}, {}, 0, "o"]):
        assert records_from_wire([raw]) == ([], 1)
    for payload in ({"t": []}, {"t": {}}):
        try:
            message_type(payload)
        except BadPayload as exc:
            assert exc.reason == "type"
        else:
            raise AssertionError("an unhashable type passed")
