"""The cache's parts on their own: placement, versions, the local store."""

from __future__ import annotations

import pytest

from hedgeplug.cache.counters import Counters
from hedgeplug.cache.errors import CacheError, ValueTooLarge
from hedgeplug.cache.placement import Placement, key_bytes
from hedgeplug.cache.store import ENTRY_OVERHEAD, Store
from hedgeplug.cache.values import check_size, pack
from hedgeplug.cache.versions import LamportClock, version_from_wire


def test_placement_is_stable_and_moves_few_keys():
    ids = [f"n{i}" for i in range(10)]
    before = Placement(ids, 2)
    after = Placement([*ids, "n10"], 2)
    keys = [f"k{i}".encode() for i in range(2000)]
    assert all(len(before.owners(k)) == 2 for k in keys)
    assert before.owners(b"x") == Placement(reversed(ids), 2).owners(b"x")
    moved = sum(1 for k in keys if before.owners(k) != after.owners(k))
    # A new member takes about R/N of the keys: 2/11 of 2000 is ~364.
    assert 200 < moved < 550
    # Every moved key moved because the newcomer entered its top 2.
    assert all("n10" in after.owners(k) for k in keys if before.owners(k) != after.owners(k))
    counts = {i: 0 for i in ids}
    for k in keys:
        counts[before.owners(k)[0]] += 1
    assert min(counts.values()) > 120  # spread: 200 each on average


def test_placement_with_fewer_members_than_replicas():
    assert Placement(["a"], 3).owners(b"k") == ("a",)
    assert Placement([], 2).owners(b"k") == ()


def test_keys_are_text_or_bytes():
    assert key_bytes("é") == "é".encode()
    assert key_bytes(b"\x00") == b"\x00"
    with pytest.raises(CacheError, match="str or bytes, not int"):
        key_bytes(3)  # type: ignore[arg-type]


def test_lamport_versions_order_writers():
    a, b = LamportClock("a"), LamportClock("b")
    va = a.tick()
    b.observe(va)
    vb = b.tick()
    assert vb > va
    assert a.tick() < vb  # a has not heard of vb: its next write is older, and refused
    assert version_from_wire([3, "x"]) == (3, "x")
    for bad in ([3], ["3", "x"], [-1, "x"], [True, "x"], "3x"):
        with pytest.raises(ValueError):
            version_from_wire(bad)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_store_takes_only_newer_versions():
    store = Store(1 << 20, Clock(), Counters())
    assert store.apply(b"k", b"v2", (2, "a"), None) is None
    assert store.apply(b"k", b"v1", (1, "b"), None) == (2, "a")
    assert store.apply(b"k", b"v2", (2, "a"), None) is None  # the same write again
    assert store.get(b"k").value == b"v2"
    assert store.apply(b"k", None, (3, "b"), None) is None  # delete: a tombstone
    assert store.apply(b"k", b"old", (2, "z"), None) == (3, "b")
    assert store.get(b"k").value is None


def test_store_evicts_least_recently_used_within_its_bound():
    counters = Counters()
    size = ENTRY_OVERHEAD + 1 + 100
    store = Store(size * 3, Clock(), counters)
    for i in range(3):
        store.apply(str(i).encode(), b"x" * 100, (1, "a"), None)
    store.get(b"0")  # now the most recent
    store.apply(b"3", b"x" * 100, (1, "a"), None)
    assert sorted(store.keys()) == [b"0", b"2", b"3"]
    assert store.used <= store.max_memory
    assert counters["evictions"] == 1
    with pytest.raises(ValueTooLarge, match="exceeds the cache's max_memory"):
        store.apply(b"big", b"x" * (size * 3), (1, "a"), None)


def test_store_expires_entries_and_tombstones():
    clock = Clock()
    counters = Counters()
    store = Store(1 << 20, clock, counters, tombstone_ttl=10)
    store.apply(b"a", b"1", (1, "a"), 5.0)
    store.apply(b"b", None, (1, "a"), None)
    clock.t = 4.9
    assert store.get(b"a") is not None
    clock.t = 5.0
    assert store.get(b"a") is None
    assert counters["expirations"] == 1
    clock.t = 10.0
    assert store.sweep() == 1
    assert len(store) == 0


def test_values_over_the_frame_limit_are_refused_before_sending():
    check_size(b"k", pack(b"x" * 1000), 4096)
    with pytest.raises(ValueTooLarge, match="frame limit of 4096 bytes"):
        check_size(b"k", pack(b"x" * 4000), 4096)
    with pytest.raises(CacheError, match="msgpack"):
        pack(object())
