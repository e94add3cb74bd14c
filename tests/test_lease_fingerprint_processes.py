"""The trust issue's lease capture, reproduced with real `hedgeplug run`
processes on the embedded sqlite lock: a node whose keys do not match the
cluster's never takes the lease, says so once in its log and reports it in
its status, whichever side started first."""

from __future__ import annotations

import pytest

from hedgeplug.testing.lease_capture import foreign_first_keeps_the_lease, foreign_joiner_never_leads

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

TTL = 2.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


async def test_a_node_of_other_keys_never_takes_the_lease_across_leader_kills(tmp_path):
    await foreign_joiner_never_leads(tmp_path, cluster="capture-2", ttl=TTL, kills=3)


async def test_nodes_joining_a_leader_of_other_keys_report_it_and_never_contend(tmp_path):
    await foreign_first_keeps_the_lease(tmp_path, cluster="capture-1", ttl=TTL)
