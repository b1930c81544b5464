"""Append throughput of the event log against a raw sqlite3 baseline, in the same run, for both durabilities.

Workload: ``--entities`` tasks (1,000) append ``--events`` events (200,000) in total, concurrently; each
task appends its own entity's events one after the other, awaiting each (as an actor does). The baseline
writes the same rows with plain ``sqlite3`` on the same schema and pragmas: per transaction of
``--baseline-batch`` rows (1,000), one ``executemany`` of event inserts and one of entity updates (the new
entities are inserted in the first transaction), which are the statements the log's writer runs per batch.

The log runs once per durability each repeat: ``process`` (``synchronous=NORMAL``, the default) and ``power``
(``synchronous=FULL``: a disk flush per batch). A second workload, ``--serial`` appends from one task
awaiting each (nothing to group: every append is its own batch), shows what a flush per commit costs when
it cannot be shared. Durability needs a real disk: the databases go to ``--dir`` (default: the current
directory's filesystem, not a RAM-backed temp dir, where a flush costs nothing).

Run: ``python bench/eventlog_append.py --repeat 3``. The last line is ``events_per_s=...
baseline_events_per_s=... ratio=... power_events_per_s=... power_ratio=... serial_per_s=...
power_serial_per_s=...`` (medians over the repeats; ``events_per_s`` and ``ratio`` are the default
durability's).
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

from eventlog import Durability, Event, EventLog, EventRegistry, Log, event
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


async def append_load(log: Log, n_events: int, n_entities: int) -> float:
    """Events/s of ``n_entities`` concurrent actors each appending its share of ``n_events`` to ``log`` (empty);
    shared by the SQLite and PostgreSQL append benchmarks."""
    per = n_events // n_entities

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


async def _run_log(path: str, n_events: int, n_entities: int, max_batch: int, durability: Durability) -> float:
    async with EventLog.open(path, registry=BENCH_REGISTRY, max_batch=max_batch, durability=durability) as log:
        return await append_load(log, n_events, n_entities)


async def _run_serial(path: str, n_events: int, durability: Durability) -> float:
    """One task appends ``n_events`` to one entity, awaiting each: one batch, one commit per append."""
    async with EventLog.open(path, registry=BENCH_REGISTRY, durability=durability) as log:
        t0 = time.perf_counter()
        for k in range(n_events):
            await log.append("partition", "daily/2026-11-01", k,
                             BenchPartitionBuilt(ref="daily/2026-11-01", generation=k, job_run_id="run-1"))
        elapsed = time.perf_counter() - t0
    return n_events / elapsed


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
    ap.add_argument("--serial", type=int, default=500, help="appends of the one-appender workload")
    ap.add_argument("--dir", default=".", help="where to write the databases (a real disk: default the current dir)")
    ap.add_argument("--profile", action="store_true", help="profile one run of the log and print the top")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "bench.db")
        if args.profile:
            _fresh(path)
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(_run_log(path, args.events, args.entities, args.max_batch, "process"))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        ours: list[float] = []
        power: list[float] = []
        base: list[float] = []
        serial: list[float] = []
        power_serial: list[float] = []
        for r in range(args.repeat):
            _fresh(path)
            ours.append(asyncio.run(_run_log(path, args.events, args.entities, args.max_batch, "process")))
            _fresh(path)
            power.append(asyncio.run(_run_log(path, args.events, args.entities, args.max_batch, "power")))
            _fresh(path)
            base.append(_run_baseline(path, args.events, args.entities, args.baseline_batch))
            _fresh(path)
            serial.append(asyncio.run(_run_serial(path, args.serial, "process")))
            _fresh(path)
            power_serial.append(asyncio.run(_run_serial(path, args.serial, "power")))
            print(f"run {r + 1}: eventlog {ours[-1]:,.0f} events/s (power: {power[-1]:,.0f}), raw sqlite3 "
                  f"{base[-1]:,.0f} events/s; one appender {serial[-1]:,.0f} appends/s (power: "
                  f"{power_serial[-1]:,.0f})", file=sys.stderr)
    o, p, b = statistics.median(ours), statistics.median(power), statistics.median(base)
    s, ps = statistics.median(serial), statistics.median(power_serial)
    print(f"events_per_s={o:.0f} baseline_events_per_s={b:.0f} ratio={o / b:.3f} power_events_per_s={p:.0f} "
          f"power_ratio={p / b:.3f} serial_per_s={s:.0f} power_serial_per_s={ps:.0f}")


if __name__ == "__main__":
    main()
