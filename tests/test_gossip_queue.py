"""The dissemination queue: least-sent and newest first, bounded retransmits, packing."""

from __future__ import annotations

from hedgeplug.membership.gossip.messages import encoded_size, record_to_wire
from hedgeplug.membership.gossip.queue import TransmitQueue, retransmit_limit
from hedgeplug.view import Member


def record(mid: str, inc: int = 0) -> list:
    return record_to_wire(Member(mid, f"127.0.0.1:{1000 + len(mid)}", {}, incarnation=inc), "o")


def test_limit_grows_with_log_of_cluster_size() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 148) == 12
    assert retransmit_limit(1, 0) == 1


def test_each_record_is_sent_exactly_the_limit_then_dropped() -> None:
    q = TransmitQueue(retransmit_mult=2)
    q.push("a", record("a"))
    sent = 0
    while q.take(10_000, cluster_size=5):
        sent += 1
    assert sent == retransmit_limit(2, 5) and len(q) == 0


def test_newest_first_among_equally_sent() -> None:
    q = TransmitQueue(4)
    for name in ("a", "b", "c"):
        q.push(name, record(name))
    assert [r[0] for r in q.take(10_000, 3)] == ["c", "b", "a"]


def test_least_sent_go_first() -> None:
    q = TransmitQueue(4)
    q.push("a", record("a"))
    q.take(10_000, 3)  # a sent once
    q.push("b", record("b"))
    q.push("c", record("c"))
    one = record("b")
    budget = encoded_size(one) + 1
    assert [r[0] for r in q.take(budget, 3)] == ["c"]
    assert [r[0] for r in q.take(budget, 3)] == ["b"]
    assert q.pending() == {"a": 1, "b": 1, "c": 1}


def test_newer_record_about_a_member_replaces_the_queued_one() -> None:
    q = TransmitQueue(4)
    q.push("a", record("a", 1))
    q.take(10_000, 3)
    q.push("a", record("a", 2))
    assert q.pending() == {"a": 0}
    assert q.take(10_000, 3)[0][4] == 2


def test_packing_respects_the_budget() -> None:
    q = TransmitQueue(4)
    for i in range(100):
        q.push(f"m{i:03}", record(f"m{i:03}"))
    size = encoded_size(record("m000")) + 1
    batch = q.take(10 * size, 100)
    assert len(batch) == 10
    assert q.take(0, 100) == []


def test_peek_shows_the_next_batch_without_counting_it_sent() -> None:
    q = TransmitQueue(4)
    q.push("a", record("a"))
    q.push("b", record("b"))
    assert [r[0] for r in q.peek(10_000)] == ["b", "a"]
    assert q.pending() == {"a": 0, "b": 0}
    assert q.peek(0) == []
