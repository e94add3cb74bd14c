"""Reading /metrics the way Prometheus does: over HTTP, parsed by
prometheus_client's own text parser."""

from __future__ import annotations

import urllib.request

import anyio.to_thread
from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def value(samples: dict, name: str, default: float | None = None, **labels: str) -> float:
    """The sample `name` whose labels include `labels` (exactly one must match)."""
    wanted = set(labels.items())
    found = [v for (n, have), v in samples.items() if n == name and wanted <= have]
    if not found and default is not None:
        return default
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples match"
    return found[0]


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        return response.status, response.headers["Content-Type"], response.read().decode()


async def scrape(url: str) -> tuple[int, str, str]:
    return await anyio.to_thread.run_sync(fetch, url)
