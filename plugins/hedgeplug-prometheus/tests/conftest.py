import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    """Every async test runs on trio (hedgeplug's default) and on asyncio."""
    return request.param
