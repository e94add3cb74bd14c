"""The trust issue's lease capture through a real etcd: a node of other keys
never takes the lease, even when the leader is SIGKILLed."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.lease_capture import foreign_joiner_never_leads


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_node_of_other_keys_never_takes_the_lease_through_etcd(tmp_path, etcd_server):
    await foreign_joiner_never_leads(
        tmp_path, cluster=f"etcd-capture-{uuid.uuid4().hex[:6]}", ttl=2.0, kills=1,
        overrides=[
            "lock.use=etcd",
            f"lock.endpoints={','.join(etcd_server.endpoints)}",
            f"lock.prefix=capture-{uuid.uuid4().hex}/",
        ],
    )
