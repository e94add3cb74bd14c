"""The partitioned cache beside redis-server and memcached, measured in the
same run on this machine: `hedgeplug bench cache` with longer phases.

    .venv/bin/python benchmarks/cache_bench.py [--json] [--size 5] [--values 100,10KiB,1MiB] ...

Every option of `hedgeplug bench cache` is taken and wins over the longer
defaults here (--count 5000 --seconds 3). See docs/cache.md, "Benchmark".
"""

from __future__ import annotations

import sys

from hedgeplug.cli import main

LONGER = ["--count", "5000", "--seconds", "3"]

if __name__ == "__main__":
    sys.exit(main(["bench", "cache", *LONGER, *sys.argv[1:]]))
