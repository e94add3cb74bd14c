import fnmatch

import pytest

# The suite runs in parallel (scripts/test-all: pytest-xdist, --dist loadgroup).
# Tests in one group run one after another on one worker, in file order. Each
# file is its own group, because some files share module-scoped nodes between
# their tests and check them at the end. One group spans files: the tests
# that run many processes at once (20 semaphore contenders, the kv and chaos
# clusters, floods) or build network-namespace labs. Two of them at once took
# both cores for seconds and starved the in-process nodes of the other
# workers past their leases; in one group they run one at a time, as the
# serial suite ran them, while the other workers take the light tests. (The
# labs must not overlap anyway: each picks a free subnet of the root
# namespace.)
HEAVY = (
    "test_*_semaphore.py", "test_semaphore_processes.py", "test_*kv_processes.py",
    "test_chaos_*.py", "test_multihost_netns.py", "test_gossip_loss_netns.py",
    "test_cache_scaling_processes.py", "test_flood*.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        heavy = any(fnmatch.fnmatch(item.path.name, pattern) for pattern in HEAVY)
        item.add_marker(pytest.mark.xdist_group("heavy" if heavy else str(item.path)))


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    """Core tests run on both backends; trio is the default one."""
    return request.param
