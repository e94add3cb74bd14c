"""Merge rules of the gossip member table, including order independence."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hedgeplug.membership.gossip.state import MemberTable, supersedes
from hedgeplug.view import Member, MemberState

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


def rec(mid: str, state: MemberState = ALIVE, inc: int = 0, address: str = "") -> Member:
    return Member(mid, address or f"{mid}:1", {}, state, inc)


def table() -> MemberTable:
    return MemberTable(rec("me"), now=0.0)


def test_higher_incarnation_wins_whatever_the_state() -> None:
    assert supersedes(rec("a", ALIVE, 2), rec("a", DEAD, 1))
    assert not supersedes(rec("a", DEAD, 1), rec("a", ALIVE, 2))


def test_at_equal_incarnation_accusations_beat_health_and_leaving_beats_all() -> None:
    order = [ALIVE, SUSPECT, DEAD, LEFT]
    for weaker, stronger in itertools.combinations(order, 2):
        assert supersedes(rec("a", stronger, 3), rec("a", weaker, 3))
        assert not supersedes(rec("a", weaker, 3), rec("a", stronger, 3))


def test_same_record_twice_changes_nothing() -> None:
    t = table()
    assert t.apply(rec("a"), 1.0) is not None
    assert t.apply(rec("a"), 2.0) is None


def test_remembered_death_stops_stale_alive_gossip_until_forgotten() -> None:
    t = table()
    t.apply(rec("a", ALIVE, 1), 0.0)
    t.apply(rec("a", DEAD, 1), 5.0)
    assert t.apply(rec("a", ALIVE, 1), 6.0) is None  # stale: same incarnation
    assert t.get("a").state is DEAD
    assert t.forget_gone(now=20.0, retention=30.0) == []
    assert [m.id for m in t.forget_gone(now=35.0, retention=30.0)] == ["a"]
    assert "a" not in t


def test_refutation_brings_a_dead_member_back() -> None:
    t = table()
    t.apply(rec("a", DEAD, 1), 0.0)
    change = t.apply(rec("a", ALIVE, 2), 1.0)
    assert change is not None and change.state_changed and t.get("a").live


def test_records_about_this_node_are_left_to_the_protocol() -> None:
    t = table()
    assert t.apply(rec("me", DEAD, 5), 0.0) is None
    assert t.me.state is ALIVE and t.me.incarnation == 0


def test_since_moves_only_when_the_state_changes() -> None:
    t = table()
    t.apply(rec("a", ALIVE, 0), 1.0)
    t.apply(rec("a", ALIVE, 1), 2.0)
    assert t.since("a") == 1.0
    t.apply(rec("a", SUSPECT, 1), 3.0)
    assert t.since("a") == 3.0


def test_recently_gone_and_live_others() -> None:
    t = table()
    t.apply(rec("a"), 0.0)
    t.apply(rec("b", SUSPECT), 0.0)
    t.apply(rec("c", DEAD), 0.0)
    t.apply(rec("d", LEFT), 0.0)
    assert sorted(m.id for m in t.live_others()) == ["a", "b"]
    assert [m.id for m in t.recently_gone(5.0, 10.0)] == ["c"]
    assert t.recently_gone(15.0, 10.0) == []
    assert t.live_count() == 3


records = st.builds(
    rec,
    st.sampled_from(["a", "b", "c", "me"]),
    st.sampled_from(list(MemberState)),
    st.integers(0, 3),
    st.sampled_from(["", "x:1", "y:2"]),
)


def snapshot(t: MemberTable) -> dict[str, Member]:
    return {m.id: m for m in t}


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=12), st.randoms(use_true_random=False))
def test_any_order_of_the_same_updates_gives_the_same_table(updates: list[Member], rnd) -> None:
    first, second = table(), table()
    first.apply_all(updates, 0.0)
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    second.apply_all(shuffled + shuffled[: len(shuffled) // 2], 0.0)  # repeats change nothing
    assert snapshot(first) == snapshot(second)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, max_size=12), st.lists(records, max_size=12))
def test_merging_two_tables_either_way_agrees(left: list[Member], right: list[Member]) -> None:
    # Two nodes that heard different halves and then exchanged state agree.
    a, b = table(), table()
    a.apply_all(left, 0.0)
    b.apply_all(right, 0.0)
    a.apply_all([m for m in b if m.id != "me"], 1.0)
    b.apply_all([m for m in a if m.id != "me"], 1.0)
    assert {k: v for k, v in snapshot(a).items() if k != "me"} == {
        k: v for k, v in snapshot(b).items() if k != "me"
    }
