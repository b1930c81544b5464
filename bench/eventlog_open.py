"""What the writer's structural check costs at open, on a big log: opening as writer (lock, schema check, the check
of the last events, high-water mark) against opening as reader (no check) in the same run.

The log: ``--events`` events (10,000,000) over ``--entities`` entities (1,000,000), written with raw ``sqlite3``
in the log's own schema (as the writer would have written them: interleaved entities, prev_seq links, the
high-water mark), so building it takes a minute rather than the hours a real runtime would need.

Run: ``python bench/eventlog_open.py``. The last line is ``writer_open_ms=... reader_open_ms=... check_ms=...
events=...`` (medians of ``--repeat`` opens; ``check_ms`` is the check alone, timed inside a writer's open).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eventlog_append import BENCH_REGISTRY, BenchPartitionBuilt  # bench/, the script's own folder

from eventlog import EventLog
from eventlog._core import TAIL_CHECK
from eventlog._schema import APPLICATION_ID, CREATE_SCHEMA, INSERT_ENTITY, INSERT_EVENT, SCHEMA_VERSION


def build(path: str, n_events: int, n_entities: int) -> None:
    """Write the log with plain sqlite3: entity i's k-th event is seq k * n_entities + i + 1."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")  # building the fixture only
    for statement in CREATE_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                   [("schema_version", str(SCHEMA_VERSION)), ("format", "wantbuild event log"),
                    ("last_seq", str(n_events))])
    db.execute("INSERT INTO event_types VALUES (1, 'BenchPartitionBuilt', 1)")
    encode = BENCH_REGISTRY.encode
    per = n_events // n_entities
    chunk: list[tuple[Any, ...]] = []
    seq = 0
    db.execute("BEGIN")
    for k in range(per):
        for i in range(n_entities):
            seq += 1
            ref = f"daily/{i:08d}"
            prev = seq - n_entities if k else None
            chunk.append((seq, i + 1, k + 1, prev, 1, encode(BenchPartitionBuilt(ref=ref, generation=k,
                                                                                  job_run_id=f"r-{seq:08d}")), 1.0))
            if len(chunk) == 100_000:
                db.executemany(INSERT_EVENT, chunk)
                chunk.clear()
    db.executemany(INSERT_EVENT, chunk)
    db.executemany(INSERT_ENTITY, ((i + 1, "partition", f"daily/{i:08d}", (per - 1) * n_entities + i + 1, per)
                                   for i in range(n_entities)))
    db.execute("COMMIT")
    db.close()


async def open_once(path: str, writer: bool) -> float:
    t0 = time.perf_counter()
    async with EventLog.open(path, writer=writer, registry=BENCH_REGISTRY):
        elapsed = time.perf_counter() - t0
    return elapsed * 1000


async def check_once(path: str) -> float:
    """Time the check alone: wrap the writer's _tail_problems during one open."""
    spent: list[float] = []
    original = EventLog._tail_problems

    async def timed(self: EventLog, mark: str | None) -> list[str]:
        t0 = time.perf_counter()
        try:
            return await original(self, mark)
        finally:
            spent.append((time.perf_counter() - t0) * 1000)

    EventLog._tail_problems = timed  # type: ignore[method-assign, assignment]
    try:
        async with EventLog.open(path, registry=BENCH_REGISTRY):
            pass
    finally:
        EventLog._tail_problems = original  # type: ignore[method-assign]
    return spent[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dir", default=".", help="where to build the log (a real disk: default the current dir)")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "big.db")
        t0 = time.perf_counter()
        build(path, args.events, args.entities)
        size = Path(path).stat().st_size
        print(f"built {args.events:,} events, {args.entities:,} entities, {size / 2**20:,.0f} MiB in "
              f"{time.perf_counter() - t0:.0f} s (tail checked: {TAIL_CHECK} events)", file=sys.stderr)
        writer: list[float] = []
        reader: list[float] = []
        check: list[float] = []
        for _ in range(args.repeat):
            writer.append(asyncio.run(open_once(path, True)))
            reader.append(asyncio.run(open_once(path, False)))
            check.append(asyncio.run(check_once(path)))
    w, r, c = statistics.median(writer), statistics.median(reader), statistics.median(check)
    print(f"writer_open_ms={w:.1f} reader_open_ms={r:.1f} check_ms={c:.2f} events={args.events}")


if __name__ == "__main__":
    main()
