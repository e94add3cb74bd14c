"""Key/value log latency per store: put through a follower and get, beside
the store's own client doing the same write and read, and one leader round
trip, all measured in the same run.

    .venv/bin/python benchmarks/kv_bench.py                      # every store
    .venv/bin/python benchmarks/kv_bench.py --store sqlite --count 300

The leader is a `hedgeplug run` process; the follower is a node in this
process, so a put crosses a process boundary to the leader and back, as in a
deployment. Throwaway servers are started for postgres (fsync off), etcd and
the Spanner emulator. Baselines: "raw write" inserts one row (one put for
etcd) and "raw read" reads the newest row of a key, through the store's own
client from this process, by the same worker-thread hop the backends use
(sqlite reads on a connection other than the writing one, as the backend);
"leader rtt" is one request to the leader's kv channel that does not touch
the store. For sqlite, whose backend reads the latest entries on the event
loop itself, "raw read inline" is the same read without the thread hop. Targets (issue 9): put p50 <= raw write + leader rtt + 1 ms; get
p50 <= 1.2 x raw read. Not a test; bounded by --count and --seconds per
measurement.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from hedgeplug import open_node
from hedgeplug.processes import ProcessCluster
from hedgeplug.state.kv_leader import KV_CHANNEL
from hedgeplug.testing.timing import Stopwatch, measure, report, summary

STORES = ("sqlite", "postgres", "etcd", "spanner")
VALUE = b"v" * 100
TTL = 3.0

Call = Callable[[], Awaitable[object]]
Raw = tuple[Call, Call, Callable[[], Awaitable[None]]] | tuple[Call, Call, Callable[[], Awaitable[None]], Call]


def raw_sqlite(path: str) -> Raw:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "k TEXT NOT NULL, v BLOB NOT NULL)")
    conn.execute("CREATE INDEX IF NOT EXISTS bench_raw_k ON bench_raw (k, id)")
    limiter = anyio.CapacityLimiter(1)

    def write() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO bench_raw (k, v) VALUES ('k', ?)", (VALUE,))
        conn.execute("COMMIT")

    # Reads on a connection of their own, as the backend's: a connection that
    # just wrote reads from its own warm cache, one that did not re-reads pages.
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def read() -> object:
        return reader.execute("SELECT v FROM bench_raw WHERE k = 'k' ORDER BY id DESC LIMIT 1").fetchone()

    async def read_inline() -> object:
        return read()

    async def close() -> None:
        conn.close()
        reader.close()

    return (lambda: anyio.to_thread.run_sync(write, limiter=limiter),
            lambda: anyio.to_thread.run_sync(read, limiter=limiter), close, read_inline)


def raw_postgres(dsn: str) -> Raw:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint GENERATED ALWAYS AS IDENTITY "
                 "PRIMARY KEY, k text NOT NULL, v bytea NOT NULL)")
    conn.execute("CREATE INDEX IF NOT EXISTS bench_raw_k ON bench_raw (k, id)")
    limiter = anyio.CapacityLimiter(1)

    async def close() -> None:
        conn.close()

    return (lambda: anyio.to_thread.run_sync(
                lambda: conn.execute("INSERT INTO bench_raw (k, v) VALUES ('k', %s)", (VALUE,)),
                limiter=limiter),
            lambda: anyio.to_thread.run_sync(
                lambda: conn.execute("SELECT v FROM bench_raw WHERE k = 'k' ORDER BY id DESC LIMIT 1"
                                     ).fetchone(), limiter=limiter),
            close)


def raw_etcd(endpoints: list[str]) -> Raw:
    from hedgeplug_etcd.gateway import GatewayClient, b64

    client = GatewayClient(endpoints, timeout=5.0)
    key = b64(f"bench-raw/{uuid.uuid4().hex}")
    return (lambda: client.call("kv/put", {"key": key, "value": b64(VALUE)}),
            lambda: client.call("kv/range", {"key": key}), client.aclose)


def raw_spanner(host: str, project: str, instance: str, database: str) -> Raw:
    from google.cloud.spanner_v1 import param_types

    from hedgeplug_spanner.store import SpannerStore, shared_database

    db = shared_database(project, instance, database, host)
    db.update_ddl(["CREATE TABLE bench_raw (k STRING(MAX) NOT NULL, id INT64 NOT NULL, "
                   "v BYTES(MAX) NOT NULL) PRIMARY KEY (k, id)"]).result(timeout=120)
    store = SpannerStore(project, instance, database, emulator_host=host, timeout=10.0)
    counter = iter(range(1, 10**9))

    def write() -> None:
        n = next(counter)

        def insert(tx: Any) -> None:
            tx.insert("bench_raw", columns=("k", "id", "v"), values=[("k", n, VALUE)])

        with store.transaction_slot():
            db.run_in_transaction(insert)

    def read() -> object:
        with db.snapshot() as snap:
            return list(snap.execute_sql(
                "SELECT v FROM bench_raw WHERE k = @k ORDER BY id DESC LIMIT 1",
                params={"k": "k"}, param_types={"k": param_types.STRING}))

    limiter = anyio.CapacityLimiter(1)

    async def close() -> None:
        pass

    return (lambda: anyio.to_thread.run_sync(write, limiter=limiter),
            lambda: anyio.to_thread.run_sync(read, limiter=limiter), close)


async def bench(store: str, overrides: list[str], raw: Raw, workdir: Path, count: int,
                seconds: float) -> None:
    cluster = ProcessCluster(workdir, cluster=f"kvbench-{uuid.uuid4().hex[:8]}",
                             overrides=[*overrides, f"lock.ttl={TTL}s"])
    write, read, close = raw[:3]
    read_inline = raw[3] if len(raw) == 4 else None
    async with cluster:
        (leader,) = await cluster.start(1)
        await cluster.wait_agreed(timeout=60)
        config = cluster.config.with_node(id="bench-follower")
        async with open_node(config) as follower:
            with anyio.fail_after(30):
                while follower.leader is None or follower.leader.holder != leader.id:
                    await anyio.sleep(0.05)

            async def cycle(watch: Stopwatch) -> None:
                with watch.timing("put"):
                    await follower.kv.put("bench/k", VALUE)
                with watch.timing("get"):
                    await follower.kv.get("bench/k")
                with watch.timing("leader rtt"):
                    await follower.parts.dispatcher.request(leader.address, KV_CHANNEL, {"op": "ping"}, 5.0)
                with watch.timing("raw write"):
                    await write()
                with watch.timing("raw read"):
                    await read()
                if read_inline is not None:
                    await write()  # like `get` and `raw read`, it reads right after a write
                    with watch.timing("raw read inline"):
                        await read_inline()

            samples = await measure(cycle, count=count, seconds=seconds)
        await close()
    print(f"\n{store}: key/value log, put through a follower and get (value {len(VALUE)} bytes)")
    for name in ("raw write", "leader rtt", "put", "raw read", "raw read inline", "get"):
        if name not in samples:
            continue
        baseline = samples.get("raw write") if name == "put" else (
            samples.get("raw read") if name == "get" else None)
        report(name, samples.get(name, []), baseline)
    if all(samples.get(n) for n in ("put", "get", "raw write", "raw read", "leader rtt")):
        s = {n: summary(samples[n]) for n in samples}
        for q in ("p50", "p99"):
            put_target = s["raw write"][q] + s["leader rtt"][q] + 1.0
            get_target = 1.2 * s["raw read"][q]
            print(f"  {q}: put {s['put'][q]:.3f} ms vs target {put_target:.3f} ms "
                  f"({'met' if s['put'][q] <= put_target else 'MISSED'}); get {s['get'][q]:.3f} ms "
                  f"vs target {get_target:.3f} ms ({'met' if s['get'][q] <= get_target else 'MISSED'})",
                  flush=True)
        if "raw read inline" in s:
            for q in ("p50", "p99"):
                print(f"  {q}: get {s['get'][q]:.3f} ms = {s['get'][q] / s['raw read inline'][q]:.2f}x "
                      f"the raw read without a thread hop ({s['raw read inline'][q]:.3f} ms)")


async def run_store(store: str, count: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        workdir = Path(tmp)
        if store == "sqlite":
            await bench(store, [], raw_sqlite(str(workdir / "lock.sqlite3")), workdir, count, seconds)
        elif store == "postgres":
            from hedgeplug_postgres.testing import start_postgres

            server = start_postgres()
            try:
                await bench(store, ["lock.use=postgres", f"lock.dsn={server.dsn}"],
                            raw_postgres(server.dsn), workdir, count, seconds)
            finally:
                server.cleanup()
        elif store == "etcd":
            from hedgeplug_etcd.testing import start_etcd

            etcd = start_etcd()
            try:
                await bench(store, ["lock.use=etcd", f"lock.endpoints={','.join(etcd.endpoints)}",
                                    f"lock.prefix=bench-{uuid.uuid4().hex}/"],
                            raw_etcd(etcd.endpoints), workdir, count, seconds)
            finally:
                etcd.cleanup()
        else:
            from hedgeplug_spanner.emulator import create_emulator_database
            from hedgeplug_spanner.testing import start_spanner_emulator

            emulator = start_spanner_emulator()
            try:
                project, instance, database = "bench", "bench", f"kv{uuid.uuid4().hex[:16]}"
                create_emulator_database(emulator.host, project, instance, database)
                await bench(store, ["lock.use=spanner", f"lock.project={project}",
                                    f"lock.instance={instance}", f"lock.database={database}",
                                    f"lock.emulator_host={emulator.host}"],
                            raw_spanner(emulator.host, project, instance, database),
                            workdir, count, seconds)
            finally:
                emulator.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=[*STORES, "all"], default="all")
    parser.add_argument("--count", type=int, default=300, help="cycles per store (at most 10000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time budget per store")
    args = parser.parse_args()
    count = max(1, min(args.count, 10_000))
    for store in STORES if args.store == "all" else (args.store,):
        anyio.run(run_store, store, count, args.seconds, backend="trio")


if __name__ == "__main__":
    main()
