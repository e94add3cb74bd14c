"""Checks on gossip payloads from peers: good records pass, bad ones are named."""

from __future__ import annotations

import pytest

from hedgeplug.membership.gossip import messages as wire
from hedgeplug.view import Member, MemberState


def test_record_round_trip() -> None:
    m = Member("a", "127.0.0.1:1", {"zone": "x"}, MemberState.SUSPECT, 7)
    assert wire.record_from_wire(wire.record_to_wire(m, "b")) == (m, "b")


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "text",
        [1, 2, 3],
        ["a", "addr", {}, "alive", 1],  # too short
        [7, "addr", {}, "alive", 1, "o"],  # id not a string
        ["", "addr", {}, "alive", 1, "o"],  # empty id
        ["a" * 600, "addr", {}, "alive", 1, "o"],  # oversized id
        ["a", "addr", {"k": 1}, "alive", 1, "o"],  # meta value not a string
        ["a", "addr", {str(i): "" for i in range(100)}, "alive", 1, "o"],  # too much meta
        ["a", "addr", {}, "zombie", 1, "o"],  # unknown state
        ["a", "addr", {}, "alive", -1, "o"],  # negative incarnation
        ["a", "addr", {}, "alive", True, "o"],  # bool is not an incarnation
        ["a", "addr", {}, "alive", 2**70, "o"],  # absurd incarnation
        ["a", "addr", [], "alive", 1, "o"],  # meta not a map
    ],
)
def test_bad_records_are_rejected_with_a_reason(bad) -> None:
    with pytest.raises(wire.BadPayload) as info:
        wire.record_from_wire(bad)
    assert info.value.reason == "record"


def test_a_bad_record_costs_only_itself() -> None:
    good = wire.record_to_wire(Member("a", "x:1"), "o")
    records, bad = wire.records_from_wire([good, "junk", good])
    assert len(records) == 2 and bad == 1


def test_record_lists_must_be_lists() -> None:
    with pytest.raises(wire.BadPayload):
        wire.records_from_wire({"not": "a list"})
    with pytest.raises(wire.BadPayload):
        wire.records_from_wire([[]] * 5, limit=3)
    assert wire.records_from_wire(None) == ([], 0)


@pytest.mark.parametrize("payload", [None, 3, [], {"t": "nope"}, {"x": 1}])
def test_unknown_payloads_are_rejected(payload) -> None:
    with pytest.raises(wire.BadPayload):
        wire.message_type(payload)


def test_fields_are_checked() -> None:
    assert wire.field_text({"to": "a"}, "to") == "a"
    for value in (None, 1, "", "x" * 1000):
        with pytest.raises(wire.BadPayload):
            wire.field_text({"to": value}, "to")
