"""Replay throughput: read and decode a whole log through ``read_batches``, against raw sqlite3 + json.

Setup (not timed): ``--events`` events (1,000,000) of three typed event kinds spread over ``--entities``
entities are written straight into a fresh log's tables. Timed: ``EventLog.read_batches`` decoding every
row into its typed ``Event`` and a ``Record``; the baseline runs the same SELECT with plain ``sqlite3``
(``fetchmany`` of the same batch size) and ``json.loads`` on each payload, in the same run.

Run: ``python bench/eventlog_replay.py --repeat 3``. The last line is
``events_per_s=... baseline_events_per_s=... ratio=...`` (medians over the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time

import structlog

from eventlog import Event, EventLog, EventRegistry, event
from eventlog._schema import APPLICATION_ID, CREATE_SCHEMA, INSERT_EVENT, SCHEMA_VERSION, SELECT_EVENTS

BENCH_REGISTRY = EventRegistry()


@event("ReplayWantCreated", 1, registry=BENCH_REGISTRY)
class ReplayWantCreated(Event, frozen=True):
    refs: tuple[str, ...]
    source: str
    comment: str = ""


@event("ReplayPartitionBuilding", 1, registry=BENCH_REGISTRY)
class ReplayPartitionBuilding(Event, frozen=True):
    job_run_id: str
    generation: int


@event("ReplayJobRunSucceeded", 1, registry=BENCH_REGISTRY)
class ReplayJobRunSucceeded(Event, frozen=True):
    exit_code: int
    duration: float
    read: dict[str, int]


def write_log(path: str, n_events: int, n_entities: int) -> None:
    """Fill a fresh log with ``n_events`` events, fast: plain sqlite3, big transactions."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    for statement in CREATE_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("schema_version", str(SCHEMA_VERSION)), ("created_at", "0")]
    )
    types: list[type[Event]] = [ReplayWantCreated, ReplayPartitionBuilding, ReplayJobRunSucceeded]
    db.executemany(
        "INSERT INTO event_types VALUES (?, ?, ?)",
        [(i + 1, t.event_name, t.event_version) for i, t in enumerate(types)],
    )
    kinds = ["want", "partition", "job_run"]
    samples = [
        ReplayWantCreated(refs=("daily/2026-11-01", "daily/2026-11-02"), source="api", comment="bench"),
        ReplayPartitionBuilding(job_run_id="run-000123", generation=3),
        ReplayJobRunSucceeded(exit_code=0, duration=12.5, read={"raw/2026-11-01": 2, "raw/2026-11-02": 1}),
    ]
    payloads = [BENCH_REGISTRY.encode(s) for s in samples]
    db.executemany(
        "INSERT INTO entities VALUES (?, ?, ?, 0, 0)",
        [(e + 1, kinds[e % 3], f"{kinds[e % 3]}-{e:06d}") for e in range(n_entities)],
    )
    last = [0] * n_entities
    eseq = [0] * n_entities
    rows = []
    for seq in range(1, n_events + 1):
        e = (seq * 7919) % n_entities
        eseq[e] += 1
        rows.append((seq, e + 1, eseq[e], last[e] or None, e % 3 + 1, payloads[e % 3], 1.7e9 + seq / 1000))
        last[e] = seq
        if len(rows) == 100_000:
            db.executemany(INSERT_EVENT, rows)
            rows = []
    db.executemany(INSERT_EVENT, rows)
    db.executemany(
        "UPDATE entities SET last_seq = ?, last_entity_seq = ? WHERE entity_key = ?",
        [(last[e], eseq[e], e + 1) for e in range(n_entities) if last[e]],
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


async def replay_log(path: str, batch_size: int) -> tuple[int, float]:
    async with EventLog.open(path, writer=False, registry=BENCH_REGISTRY) as log:
        t0 = time.perf_counter()
        n = 0
        async for batch in log.read_batches(batch_size=batch_size):
            n += len(batch)
        elapsed = time.perf_counter() - t0
        assert isinstance(batch[-1].event, Event)
    return n, elapsed


def replay_baseline(path: str, batch_size: int) -> tuple[int, float]:
    db = sqlite3.connect(path)
    loads = json.loads
    t0 = time.perf_counter()
    cur = db.execute(SELECT_EVENTS + "ORDER BY e.seq")
    n = 0
    while rows := cur.fetchmany(batch_size):
        decoded = [(r[0], r[1], r[2], r[3], r[4], loads(r[5]), r[6]) for r in rows]
        n += len(decoded)
    elapsed = time.perf_counter() - t0
    db.close()
    return n, elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--dir", default=None, help="where to write the database (default: a temp dir)")
    ap.add_argument("--profile", action="store_true", help="profile one replay and print the top")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "replay.db")
        t0 = time.perf_counter()
        write_log(path, args.events, args.entities)
        print(f"wrote {args.events:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(replay_log(path, args.batch_size))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        ours: list[float] = []
        base: list[float] = []
        for r in range(args.repeat):
            n, dt = asyncio.run(replay_log(path, args.batch_size))
            assert n == args.events, n
            ours.append(n / dt)
            n, dt = replay_baseline(path, args.batch_size)
            assert n == args.events, n
            base.append(n / dt)
            print(f"run {r + 1}: eventlog {ours[-1]:,.0f} events/s, raw sqlite3 + json {base[-1]:,.0f} events/s",
                  file=sys.stderr)
    o, b = statistics.median(ours), statistics.median(base)
    print(f"events_per_s={o:.0f} baseline_events_per_s={b:.0f} ratio={o / b:.3f}")


if __name__ == "__main__":
    main()
