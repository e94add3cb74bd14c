"""`hedgeplug cache stats|get|set` against a running node over loopback tcp."""

from __future__ import annotations

import argparse
import json

import anyio
import pytest
from cache_cluster import CacheCluster

from hedgeplug.cli import cache as cache_cli
from hedgeplug.errors import RemoteError

pytestmark = pytest.mark.anyio


def command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cache_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def anyio_backend():
    return "trio"


async def test_cache_command_through_any_node(tmp_path, capsys):
    async with anyio.create_task_group() as tg:
        cluster = CacheCluster(tg, lock_path=str(tmp_path / "lock.db"))
        a = await cluster.start("a")
        await cluster.start("b")
        await cluster.settle(2)
        address = cluster.nodes["b"].address
        common = ["-a", address, "--cluster", cluster.cluster]

        def run(*argv: str) -> str:
            capsys.readouterr()
            assert cache_cli.run(command(*argv)) == 0
            return capsys.readouterr().out

        await anyio.to_thread.run_sync(
            run, "set", "test", "user:1", '{"name": "ada"}', "--json-value", *common
        )
        assert await a.get("user:1") == {"name": "ada"}
        out = await anyio.to_thread.run_sync(run, "get", "test", "user:1", *common, "--json")
        assert json.loads(out) == {"name": "ada"}
        out = await anyio.to_thread.run_sync(run, "get", "test", "nobody", *common)
        assert out.strip() == "(miss)"
        out = await anyio.to_thread.run_sync(run, "stats", "test", *common, "--json")
        stats = json.loads(out)
        assert stats["name"] == "test" and stats["hits"] == 1 and stats["misses"] == 1
        out = await anyio.to_thread.run_sync(run, "stats", "test", *common)
        assert "cache test:" in out and "redirects" in out

        def unknown() -> None:
            cache_cli.run(command("stats", "nope", *common))

        with pytest.raises(RemoteError, match="has no cache named 'nope'"):
            await anyio.to_thread.run_sync(unknown)
        cluster.close()


def test_bad_json_value_is_a_usage_error():
    from hedgeplug.cli.common import UsageError

    with pytest.raises(UsageError, match="VALUE is not valid JSON"):
        cache_cli._request(command("set", "c", "k", "{oops", "--json-value", "-a", "127.0.0.1:1"))
