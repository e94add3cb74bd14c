"""The fleet's join pick reads one address per start instead of building the
list of every running address; it must draw exactly what `Random.choice`
over that list drew, or every recorded digest would change."""

from __future__ import annotations

from random import Random

import pytest

from hedgeplug.sim.fleet import _JoinCandidates
from hedgeplug.sim.simnode import SimNode


def nodes(count: int) -> list[SimNode]:
    return [SimNode(f"n{i:04d}", i, f"mem://n{i:04d}", 0.0) for i in range(count)]


@pytest.mark.parametrize("count", [0, 1, 2, 7, 300])
def test_join_pick_draws_like_choice_over_the_list(count: int) -> None:
    running = nodes(count)
    plain = [*(sn.address for sn in running), "mem://own"]
    candidates = _JoinCandidates(running, "mem://own")
    assert len(candidates) == len(plain)
    assert list(candidates) == plain and candidates[-1] == "mem://own"
    for seed in range(20):
        a, b = Random(seed), Random(seed)
        assert [a.choice(plain) for _ in range(50)] == [b.choice(candidates) for _ in range(50)]
        assert a.random() == b.random()  # and left the generator in the same state
