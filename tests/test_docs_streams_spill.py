"""The runnable examples of docs/streams.md and docs/spill.md run, as
written, in a process of their own, and print what the pages say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

EXPECTED = {
    ("streams.md", 0): ["{'from': 'b', 'job': 'job-1', 'total': 4950}"],
    ("streams.md", 1): ["open to ('a', 'b') failed: ['c']", "a True 1000", "b True 1000", "c False stream 'tally' to c: c has no stream handler for channel 'tally'"],
    ("spill.md", 0): ["{'a': 2.7, 'b': 6.3}", "read back in order: True"],
}


def examples(page):
    text = (DOCS / page).read_text()
    return [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "anyio.run(" in block]


@pytest.mark.parametrize(("page", "index"), sorted(EXPECTED))
def test_example_runs_and_prints_what_the_page_says(tmp_path, page, index):
    code = examples(page)[index]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for expected in EXPECTED[(page, index)]:
        assert expected in done.stdout, done.stdout


def test_every_example_is_checked():
    assert {(p, i) for p in ("streams.md", "spill.md") for i in range(len(examples(p)))} == set(EXPECTED)
