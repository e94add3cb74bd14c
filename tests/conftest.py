import pytest

# The suite runs in parallel (scripts/test-all: pytest-xdist, --dist loadgroup).
# Tests in one group run one after another on one worker, in file order. Each
# file is its own group, because some files share module-scoped nodes between
# their tests and check them at the end. Groups of several files: the network
# namespace labs pick a free subnet of the root namespace and create bridges,
# so two of them building at once could pick the same one.
SERIAL_GROUPS = {
    "netns": ("test_chaos_partition.py", "test_multihost_netns.py", "test_gossip_loss_netns.py"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next(
            (name for name, files in SERIAL_GROUPS.items() if item.path.name in files),
            str(item.path),
        )
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    """Core tests run on both backends; trio is the default one."""
    return request.param
