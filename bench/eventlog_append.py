"""Append throughput of the event log against a raw sqlite3 baseline, in the same run.

Workload: ``--entities`` tasks (1,000) append ``--events`` events (200,000) in total, concurrently; each
task appends its own entity's events one after the other, awaiting each (as an actor does). The baseline
writes the same rows with plain ``sqlite3`` on the same schema and pragmas: per transaction of
``--baseline-batch`` rows (1,000), one ``executemany`` of event inserts and one of entity updates (the new
entities are inserted in the first transaction), which are the statements the log's writer runs per batch.

Run: ``python bench/eventlog_append.py --repeat 3``. The last line is
``events_per_s=... baseline_events_per_s=... ratio=...`` (medians over the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time

import structlog
from _baseline_rows import interleaved_batches  # bench/, the script's own folder

from eventlog import Event, EventLog, EventRegistry, event
from eventlog._schema import CREATE_SCHEMA, INSERT_ENTITY, INSERT_EVENT, UPDATE_ENTITY

BENCH_REGISTRY = EventRegistry()


@event("BenchPartitionBuilt", 1, registry=BENCH_REGISTRY)
class BenchPartitionBuilt(Event, frozen=True):
    """A small, typical payload: a ref, a generation, a run id."""

    ref: str
    generation: int
    job_run_id: str


def _fresh(path: str) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


async def _run_log(path: str, n_events: int, n_entities: int, max_batch: int) -> float:
    per = n_events // n_entities
    async with EventLog.open(path, registry=BENCH_REGISTRY, max_batch=max_batch) as log:

        async def actor(i: int) -> None:
            eid = f"daily/2026-11-{i:04d}"
            run = f"run-{i}"
            for k in range(per):
                await log.append("partition", eid, k, BenchPartitionBuilt(ref=eid, generation=k, job_run_id=run))

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(n_entities):
                tg.create_task(actor(i))
        elapsed = time.perf_counter() - t0
        assert log.last_seq == per * n_entities, log.last_seq
    return per * n_entities / elapsed


def _run_baseline(path: str, n_events: int, n_entities: int, batch: int) -> float:
    per = n_events // n_entities
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for statement in CREATE_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    encode = BENCH_REGISTRY.encode
    ids = [f"daily/2026-11-{i:04d}" for i in range(n_entities)]
    t0 = time.perf_counter()
    created = False
    for rows, tips in interleaved_batches(
        n_events, n_entities, batch,
        lambda i, k: encode(BenchPartitionBuilt(ref=ids[i], generation=k, job_run_id=f"run-{i}")),
    ):
        db.execute("BEGIN IMMEDIATE")
        if not created:
            db.execute("INSERT INTO event_types VALUES (1, 'BenchPartitionBuilt', 1)")
        db.executemany(INSERT_EVENT, rows)
        if not created:
            db.executemany(INSERT_ENTITY, [(i + 1, "partition", ids[i], 0, 0) for i in range(n_entities)])
            created = True
        db.executemany(UPDATE_ENTITY, tips)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    db.close()
    return per * n_entities / elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--entities", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--baseline-batch", type=int, default=1_000)
    ap.add_argument("--dir", default=None, help="where to write the databases (default: a temp dir)")
    ap.add_argument("--profile", action="store_true", help="profile one run of the log and print the top")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "bench.db")
        if args.profile:
            _fresh(path)
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(_run_log(path, args.events, args.entities, args.max_batch))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        ours: list[float] = []
        base: list[float] = []
        for r in range(args.repeat):
            _fresh(path)
            ours.append(asyncio.run(_run_log(path, args.events, args.entities, args.max_batch)))
            _fresh(path)
            base.append(_run_baseline(path, args.events, args.entities, args.baseline_batch))
            print(f"run {r + 1}: eventlog {ours[-1]:,.0f} events/s, raw sqlite3 {base[-1]:,.0f} events/s",
                  file=sys.stderr)
    o, b = statistics.median(ours), statistics.median(base)
    print(f"events_per_s={o:.0f} baseline_events_per_s={b:.0f} ratio={o / b:.3f}")


if __name__ == "__main__":
    main()
