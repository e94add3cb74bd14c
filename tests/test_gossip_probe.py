"""Probe order: every member once per pass, reshuffled, reproducible from the seed."""

from __future__ import annotations

from random import Random

from hedgeplug.membership.gossip.probe import ProbeOrder
from hedgeplug.view import Member


def members(*ids: str) -> dict[str, Member]:
    return {i: Member(i, f"{i}:1") for i in ids}


def one_pass(order: ProbeOrder, candidates: dict[str, Member]) -> list[str]:
    return [order.next(candidates).id for _ in range(len(candidates))]


def test_each_member_once_per_pass_in_a_fresh_order() -> None:
    order = ProbeOrder(Random(1))
    ms = members(*"abcdefgh")
    passes = [one_pass(order, ms) for _ in range(4)]
    assert all(sorted(p) == sorted(ms) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes


def test_same_seed_same_order() -> None:
    ms = members(*"abcdef")
    assert one_pass(ProbeOrder(Random(7)), ms) == one_pass(ProbeOrder(Random(7)), ms)


def test_gone_members_are_skipped_and_new_ones_join_the_next_pass() -> None:
    order = ProbeOrder(Random(3))
    ms = members("a", "b", "c")
    first = order.next(ms).id
    rest = {k: v for k, v in ms.items() if k != first}
    gone = next(iter(rest))
    now = {k: v for k, v in ms.items() if k != gone} | members("z")
    seen = [order.next(now).id for _ in range(4)]
    assert gone not in seen
    assert "z" in seen


def test_nobody_to_probe() -> None:
    assert ProbeOrder(Random(1)).next({}) is None
