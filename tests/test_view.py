from hedgeplug.view import Member, MemberState, View, ViewVersion


def m(i, state=MemberState.ALIVE):
    return Member(f"n{i}", f"127.0.0.1:{7000 + i}", {"z": "a"}, state)


def test_view_is_sorted_and_digest_depends_only_on_live_members():
    a = View.of([m(2), m(1), m(3, MemberState.DEAD)], 1, 1)
    b = View.of([m(1), m(2)], 2, 9)
    assert [x.id for x in a.members] == ["n1", "n2", "n3"]
    assert a.ids == {"n1", "n2"} and len(a) == 2
    assert a.digest() == b.digest()
    assert a.digest() != View.of([m(1)]).digest()


def test_diff_reports_joined_and_left():
    old = View.of([m(1), m(2)])
    new = View.of([m(2), m(3)])
    joined, left = old.diff(new)
    assert [x.id for x in joined] == ["n3"] and [x.id for x in left] == ["n1"]


def test_versions_order_by_token_then_seq():
    assert ViewVersion(1, 99) < ViewVersion(2, 0)
    assert ViewVersion(2, 1) < ViewVersion(2, 2)
    assert str(ViewVersion(3, 4)) == "3.4"


def test_member_wire_round_trip():
    x = Member("a", "h:1", {"k": "v"}, MemberState.SUSPECT, 4)
    assert Member.from_wire(x.to_wire()) == x
    assert x.metadata == {"k": "v"}
