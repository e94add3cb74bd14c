"""Lifeguard suspicion timeouts and the local health multiplier."""

from __future__ import annotations

import math

import pytest

from hedgeplug.membership.gossip.awareness import Awareness
from hedgeplug.membership.gossip.suspicion import (
    Suspicions,
    expected_confirmations,
    suspicion_bounds,
)


def test_minimum_grows_with_log_of_cluster_size() -> None:
    assert suspicion_bounds(5, 1.0, 4, 6) == (4.0, 24.0)  # log10(5) < 1 floors at 1
    low, high = suspicion_bounds(148, 1.0, 4, 6)
    assert low == pytest.approx(4 * math.log10(148)) and high == pytest.approx(6 * low)


def test_the_confirmed_minimum_is_capped_and_the_maximum_is_not() -> None:
    low, high = suspicion_bounds(148, 1.0, 4, 6, confirmed=2.0)
    assert low == 2.0 and high == pytest.approx(6 * 4 * math.log10(148))
    assert suspicion_bounds(5, 1.0, 1, 6, confirmed=2.0) == (1.0, 6.0)  # below the cap: kept
    s = Suspicions(mult=4, max_mult=6, confirmed=2.0)
    sus = s.start("x", 1, "a", now=0.0, cluster_size=150, probe_interval=1.0)
    assert sus.timeout() == pytest.approx(high := 6 * 4 * math.log10(150))
    s.confirm("x", 1, "b")
    assert 2.0 < sus.timeout() < high
    s.confirm("x", 1, "c")
    assert sus.timeout() == 2.0


def test_expected_confirmations_shrink_in_small_clusters() -> None:
    assert expected_confirmations(4, 100) == 2
    assert expected_confirmations(4, 3) == 1
    assert expected_confirmations(4, 2) == 0


def test_timeout_shrinks_from_max_to_min_with_independent_confirmations() -> None:
    s = Suspicions(mult=4, max_mult=6)
    sus = s.start("x", 1, "a", now=0.0, cluster_size=10, probe_interval=1.0)
    assert sus.timeout() == pytest.approx(24.0)
    assert s.confirm("x", 1, "b")
    middle = sus.timeout()
    assert 4.0 < middle < 24.0
    assert not s.confirm("x", 1, "b")  # the same accuser again is not independent
    assert not s.confirm("x", 2, "c")  # another incarnation is another suspicion
    assert s.confirm("x", 1, "c")
    assert sus.timeout() == pytest.approx(4.0)
    assert not s.confirm("x", 1, "d")  # beyond the expected count nothing changes


def test_expiry_removes_and_returns_due_suspicions() -> None:
    s = Suspicions(mult=4, max_mult=6)
    s.start("x", 0, "a", now=0.0, cluster_size=2, probe_interval=1.0)  # k=0: minimum at once
    s.start("y", 0, "a", now=0.0, cluster_size=10, probe_interval=1.0)
    assert s.next_deadline() == pytest.approx(4.0)
    assert s.expired(3.9) == []
    assert [x.member for x in s.expired(4.0)] == ["x"]
    assert "x" not in s and "y" in s
    s.cancel("y")
    assert len(s) == 0 and s.next_deadline() is None


def test_awareness_scales_and_stays_in_bounds() -> None:
    a = Awareness(max_multiplier=8)
    assert a.healthy and a.scale(0.5) == 0.5
    assert a.apply(3) == 3 and a.scale(0.5) == 2.0
    assert a.apply(100) == 7
    assert a.apply(-100) == 0 and a.healthy
