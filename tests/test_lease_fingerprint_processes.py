"""The trust issue's lease capture, reproduced with real `hedgeplug run`
processes on the embedded sqlite lock: a node whose keys do not match the
cluster's never takes the lease, says so once in its log and reports it in
its status, whichever side started first; and a rolling key rotation keeps
one leader."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from hedgeplug.testing.lease_capture import (
    KeyedCluster,
    Status,
    describe,
    foreign_first_keeps_the_lease,
    foreign_joiner_never_leads,
    leaders,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

TTL = 2.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


async def test_a_node_of_other_keys_never_takes_the_lease_across_leader_kills(tmp_path):
    await foreign_joiner_never_leads(tmp_path, cluster="capture-2", ttl=TTL, kills=3)


async def test_nodes_joining_a_leader_of_other_keys_report_it_and_never_contend(tmp_path):
    await foreign_first_keeps_the_lease(tmp_path, cluster="capture-1", ttl=TTL)


async def test_a_rolling_key_rotation_keeps_one_leader_through_leader_kills(tmp_path):
    """docs/security.md's three steps, one node at a time, the leader SIGKILLed
    (and restarted on its key file) after each: one leader throughout, never a
    mismatch, and the lease ends stamped with the new key."""
    async with KeyedCluster(tmp_path, cluster="rotation", ttl=TTL) as kc:
        a_id, b_id = kc.key_id("A"), kc.key_id("B")
        slots = [kc.key_file(tmp_path / f"slot{i}.keys", ["A"]) for i in range(3)]
        slot_of: dict[str, Path] = {}
        for slot in slots:
            slot_of[(await kc.add("A", key_file=slot)).id] = slot
        kc.status_keys = ["A", "B"]
        violations: list[str] = []

        async def monitor() -> None:
            while True:
                statuses = await kc.statuses()
                if len(leaders(statuses)) > 1:
                    violations.append(f"two leaders:\n{describe(statuses)}")
                for node_id, s in statuses.items():
                    if s is not None and s["key_mismatch"] is not None:
                        violations.append(f"{node_id}: {s['key_mismatch']['message']}")
                await anyio.sleep(0.1)

        def one_leader(fingerprints: set[str]):  # noqa: ANN202
            def holds(statuses: dict[str, Status | None]) -> bool:
                led = leaders(statuses)
                return len(led) == 1 and all(
                    s is not None and s["leader"] is not None and s["leader"]["id"] == led[0]
                    and s["leader"]["fingerprint"] in fingerprints
                    for s in statuses.values()
                )
            return holds

        async def step(keys: list[str], fingerprints: set[str]) -> None:
            before = {i: s["counters"].get("keyring.reloads", 0) for i, s in (await kc.statuses()).items() if s}
            for node_id in before:
                kc.key_file(slot_of[node_id], keys)
                await anyio.sleep(0.3)  # one node at a time: neighbours are a step apart
            await kc.wait(
                lambda st: all(
                    s is not None and s["counters"].get("keyring.reloads", 0) > before[i]
                    for i, s in st.items() if i in before
                ),
                10, f"every node applied {keys}",
            )
            settled = await kc.wait(one_leader(fingerprints), 2 * TTL + 10, f"one leader stamped {fingerprints}")
            (leader_id,) = leaders(settled)
            victim = next(n for n in kc.processes.live if n.id == leader_id)
            kc.processes.kill(victim)
            slot_of[(await kc.add("A", key_file=slot_of[victim.id])).id] = slot_of[victim.id]
            await kc.wait(
                lambda st: one_leader(fingerprints)(st) and leaders(st) != [leader_id],
                2 * TTL + 10, f"a new leader stamped {fingerprints} after the kill",
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor)
            await kc.wait(one_leader({a_id}), 4 * TTL + 10, "one leader stamped with key A")
            await step(["A", "B"], {a_id})
            kc.status_keys = ["B", "A"]
            await step(["B", "A"], {b_id})  # the leader stamps its new primary at its next renewal
            await step(["B"], {b_id})
            tg.cancel_scope.cancel()
        assert violations == []
