"""Views and members shared between the nodes of one process: the same
contents as building them one node at a time, fewer objects."""

from hedgeplug.view import Member, MemberState, View, ViewVersion


def wire(i: int, state: str = "alive") -> list[object]:
    return [f"s{i:03d}", f"mem://s{i:03d}", {}, state, 0]


def plain_changed(base: View, changes: list[tuple[list[Member], list[str]]], version: ViewVersion) -> View:
    """What a follower built before sharing: a dict of all members, changed, sorted."""
    members = {m.id: m for m in base.members}
    for joined, left in changes:
        for m in joined:
            members[m.id] = m
        for mid in left:
            members.pop(mid, None)
    return View(tuple(members.values()), version)


def test_members_decoded_twice_are_one_object_and_equal_to_a_fresh_one() -> None:
    a, b = Member.from_wire(wire(1)), Member.from_wire(wire(1))
    assert a is b
    assert a == Member("s001", "mem://s001")
    with_meta = Member.from_wire(["x", "mem://x", {"k": "v"}, "suspect", 2])
    assert with_meta == Member("x", "mem://x", {"k": "v"}, MemberState.SUSPECT, 2)
    assert Member.from_wire(["x", "mem://x", {"k": "v"}, "suspect", 2]) is with_meta


def test_bad_wire_members_are_still_refused() -> None:
    for bad in ([1, "a", {}, "alive", 0], ["a", "b", {}, "nonsense", 0], ["a", "b", {}, "alive", "x"]):
        try:
            Member.from_wire(bad)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_changed_equals_the_plain_rebuild_and_is_shared() -> None:
    base = View([Member.from_wire(wire(i)) for i in range(0, 40, 2)], ViewVersion(3, 10))
    changes = [([Member.from_wire(wire(5)), Member.from_wire(wire(41))], ["s002"]), ([], ["s041", "nobody"])]
    version = ViewVersion(3, 12)
    got = base.changed(changes, version)
    assert got == plain_changed(base, changes, version)
    assert [m.id for m in got.members] == sorted(m.id for m in got.members)
    # A second node applying the same change to the same view gets the same object.
    assert base.changed(changes, version) is got
    # One reaching an equal view another way (a full view) is given the shared one.
    assert View(tuple(got.members), version).shared() is got


def test_diff_along_a_change_equals_the_full_diff() -> None:
    base = View([Member.from_wire(wire(i)) for i in range(30)], ViewVersion(4, 1))
    dead = Member.from_wire(wire(7, "dead"))
    changes = [([Member.from_wire(wire(50)), dead], ["s003", "s004"]), ([Member.from_wire(wire(3))], [])]
    new = base.changed(changes, ViewVersion(4, 3))
    joined, left = base.diff(new)
    # The same answer as a diff between unrelated (unshared) objects.
    plain_old = View(tuple(base.members), base.version)
    plain_new = plain_changed(base, changes, ViewVersion(4, 3))
    assert (joined, left) == plain_old.diff(plain_new)
    assert [m.id for m in joined] == ["s050"]
    assert [m.id for m in left] == ["s004", "s007"]
    assert new.diff(new) == ((), ())


def test_views_with_repeated_ids_keep_their_diff() -> None:
    a = Member("d", "mem://1")
    b = Member("d", "mem://2")
    old = View([Member("c", "mem://c")])
    new = View([a, b])
    joined, left = old.diff(new)
    assert joined == (a, b) and [m.id for m in left] == ["c"]
