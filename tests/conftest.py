import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    """Core tests run on both backends; trio is the default one."""
    return request.param
