"""The trust issue's lease capture through the lease file: a node of other
keys never takes the lease, even when the leader is SIGKILLed; a lease file
from before fingerprints reads as "no fingerprint"."""

from __future__ import annotations

import json

import pytest
from hedgeplug.testing.lease_capture import foreign_joiner_never_leads

from hedgeplug_filelock import FileLock


@pytest.fixture
def anyio_backend():
    return "trio"


@pytest.mark.anyio
async def test_a_lease_file_from_before_fingerprints_reads_as_none(tmp_path):
    path = tmp_path / "lease.json"
    lock = FileLock(str(path), "lock")
    lease = await lock.acquire("old", "addr", 5.0)
    assert lease is not None
    document = json.loads(path.read_text())
    del document["locks"]["lock"]["fingerprint"]  # as an older version wrote it
    path.write_text(json.dumps(document))
    seen = await lock.current()
    assert seen is not None and seen.fingerprint == ""
    assert await lock.last_fingerprint() == ""


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_node_of_other_keys_never_takes_the_lease_through_a_lease_file(tmp_path):
    await foreign_joiner_never_leads(
        tmp_path, cluster="filelock-capture", ttl=2.0, kills=1,
        overrides=["lock.use=filelock", f"lock.path={tmp_path / 'lease.json'}"],
    )
