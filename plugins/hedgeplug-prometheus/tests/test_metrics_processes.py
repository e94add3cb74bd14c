"""Real `hedgeplug run` processes with the plugin installed, scraped over
HTTP like Prometheus would: the plugin needs no configuration, and its
metrics follow a failover between processes."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import anyio
import pytest
from hedgeplug.processes import NodeProcess, start_node
from scrape import families, parse, scrape, value

from hedgeplug_prometheus import LISTEN_ENV

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"metrics on http://(\S+)/metrics")

CONFIG = """\
[node]
cluster = "prom-processes"
stop_timeout = "1s"

[lock]
use = "sqlite"
path = "{lease}"
ttl = "1s"

[transport]
use = "tcp"
bind = "127.0.0.1:0"

[membership]
use = "heartbeat"
interval = "100ms"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # the processes run on trio whatever the test runs on


def metrics_url(node: NodeProcess) -> str:
    """Where the process listens for scrapes: the plugin logs it before the ready line."""
    match = LISTENING.search(node.log_path.read_text())
    assert match, f"no metrics address in the log:\n{node.log_tail()}"
    return f"http://{match[1]}/metrics"


async def until(what: str, check, timeout: float = 15.0) -> None:
    with anyio.move_on_after(timeout):
        while not await check():
            await anyio.sleep(0.1)
        return
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.mark.anyio
async def test_processes_serve_metrics_and_count_a_failover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "hedgeplug.toml"
    config.write_text(CONFIG.format(lease=tmp_path / "lease.db"))
    monkeypatch.setenv(LISTEN_ENV, "127.0.0.1:0")  # each process picks a free port and logs it
    nodes: list[NodeProcess] = []
    try:
        for name in ("p1", "p2"):
            nodes.append(await start_node(["--config", str(config), "--id", name], tmp_path / f"{name}.log"))
        urls = {node.id: metrics_url(node) for node in nodes}

        async def samples(node_id: str) -> dict:
            status, content_type, text = await scrape(urls[node_id])
            assert status == 200 and content_type.startswith("text/plain")
            return parse(text)

        async def agreed() -> bool:
            views = [await samples(n) for n in urls]
            leaders = [value(m, "hedgeplug_is_leader", node=n) for m, n in zip(views, urls, strict=True)]
            members = [value(m, "hedgeplug_view_members", node=n) for m, n in zip(views, urls, strict=True)]
            return sorted(leaders) == [0.0, 1.0] and members == [2.0, 2.0]

        await until("one leader, two members in both views", agreed)
        text = (await scrape(urls["p1"]))[2]
        assert {"hedgeplug_is_leader", "hedgeplug_store_call_seconds", "process_cpu_seconds"} <= families(text)

        by_id = {node.id: node for node in nodes}
        first = {n: await samples(n) for n in urls}
        leader = next(n for n in urls if value(first[n], "hedgeplug_is_leader", node=n) == 1.0)
        survivor = next(n for n in urls if n != leader)
        assert value(first[survivor], "hedgeplug_failovers_total", default=0.0, node=survivor) == 0.0
        assert value(first[survivor], "hedgeplug_joins_total", node=survivor) >= 2

        by_id[leader].signal(signal.SIGKILL)

        async def took_over() -> bool:
            m = await samples(survivor)
            return value(m, "hedgeplug_is_leader", node=survivor) == 1.0 and value(
                m, "hedgeplug_view_members", node=survivor
            ) == 1.0

        await until("the survivor leads alone", took_over)
        after = await samples(survivor)
        assert value(after, "hedgeplug_failovers_total", node=survivor) == 1.0
        assert value(after, "hedgeplug_leaves_total", node=survivor) >= 1.0
        assert value(after, "hedgeplug_store_call_seconds_count", operation="acquire", node=survivor) >= 1.0
        assert value(after, "hedgeplug_fencing_token", node=survivor) > value(
            first[survivor], "hedgeplug_fencing_token", node=survivor
        )
    finally:
        with anyio.CancelScope(shield=True):
            for node in nodes:
                if node.process.returncode is None:
                    node.signal(signal.SIGTERM)
            for node in nodes:
                with anyio.move_on_after(10):
                    await node.process.wait()
