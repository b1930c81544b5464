"""Append throughput of the PostgreSQL event log against raw asyncpg ``executemany``, in the same run.

Workload (as ``bench/eventlog_append.py``): ``--entities`` tasks (1,000) append ``--events`` events (100,000) in
total, concurrently; each task appends its own entity's events one after the other, awaiting each (as an actor
does). The baseline writes the same rows into the same schema with plain asyncpg: per transaction of
``--baseline-batch`` rows (1,000), one ``executemany`` of event inserts and one of entity-tip updates (the new
entities inserted in the first), the statements a writer needs per batch, without the lease fence or NOTIFY.
Both run with ``synchronous_commit = on`` (the server default): every commit waits for its WAL flush.

The server: ``--url postgresql://...`` (the user must be allowed to create schemas), else a throwaway one started
from Debian's binaries (``tests/pg_server.py``). Each run uses a fresh schema.

Run: ``python bench/pg_append.py --repeat 3``. The last line is
``events_per_s=... baseline_events_per_s=... ratio=...`` (medians over the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _baseline_rows import interleaved_batches  # bench/, the script's own folder
from _pg import drop_schema, schema_url, server
from eventlog_append import BENCH_REGISTRY, BenchPartitionBuilt, append_load  # bench/, the script's own folder

from eventlog import open_log
from eventlog._pg_schema import CREATE_SCHEMA
from eventlog._target import PgTarget


async def _run_log(base: str, schema: str, n_events: int, n_entities: int, max_batch: int) -> float:
    async with open_log(schema_url(base, schema), registry=BENCH_REGISTRY, max_batch=max_batch) as log:
        return await append_load(log, n_events, n_entities)


async def _run_baseline(base: str, schema: str, n_events: int, n_entities: int, batch: int) -> float:
    await drop_schema(base, schema)
    per = n_events // n_entities
    s = f'"{schema}"'
    conn: Any = await asyncpg.connect(PgTarget(base).dsn)
    try:
        await conn.execute("SET synchronous_commit = on")
        await conn.execute(CREATE_SCHEMA.format(s=s))
        insert_event = f"INSERT INTO {s}.events (seq, entity_key, entity_seq, prev_seq, type_key, payload, at) " \
                       "VALUES ($1, $2, $3, $4, $5, $6, $7)"
        insert_entity = f"INSERT INTO {s}.entities (entity_key, kind, entity_id, last_seq, last_entity_seq) " \
                        "VALUES ($1, $2, $3, $4, $5)"
        update_entity = f"UPDATE {s}.entities SET last_seq = $1, last_entity_seq = $2 WHERE entity_key = $3"
        encode = BENCH_REGISTRY.encode
        ids = [f"daily/2026-11-{i:04d}" for i in range(n_entities)]
        t0 = time.perf_counter()
        created = False
        for rows, tips in interleaved_batches(
            n_events, n_entities, batch,
            lambda i, k: encode(BenchPartitionBuilt(ref=ids[i], generation=k, job_run_id=f"run-{i}")),
        ):
            async with conn.transaction():
                if not created:
                    await conn.execute(f"INSERT INTO {s}.event_types VALUES (1, 'BenchPartitionBuilt', 1)")
                await conn.executemany(insert_event, rows)
                if not created:
                    await conn.executemany(insert_entity, [(i + 1, "partition", ids[i], 0, 0)
                                                           for i in range(n_entities)])
                    created = True
                await conn.executemany(update_entity, tips)
        elapsed = time.perf_counter() - t0
    finally:
        await conn.close()
    return per * n_entities / elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--url", default=None, help="a PostgreSQL server to use (default: start a throwaway one)")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--entities", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--baseline-batch", type=int, default=1_000)
    ap.add_argument("--profile", action="store_true", help="profile one run of the log and print the top")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    with server(args.url) as base:
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(_run_log(base, "bench_profile", args.events, args.entities, args.max_batch))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        ours: list[float] = []
        raw: list[float] = []
        for r in range(args.repeat):
            ours.append(asyncio.run(_run_log(base, "bench_log", args.events, args.entities, args.max_batch)))
            raw.append(asyncio.run(_run_baseline(base, "bench_raw", args.events, args.entities,
                                                 args.baseline_batch)))
            print(f"run {r + 1}: eventlog {ours[-1]:,.0f} events/s, raw asyncpg executemany {raw[-1]:,.0f} events/s",
                  file=sys.stderr)
        for schema in ("bench_log", "bench_raw", "bench_profile"):
            asyncio.run(drop_schema(base, schema))
    o, b = statistics.median(ours), statistics.median(raw)
    print(f"events_per_s={o:.0f} baseline_events_per_s={b:.0f} ratio={o / b:.3f}")


if __name__ == "__main__":
    main()
