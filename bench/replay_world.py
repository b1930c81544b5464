"""Rebuild a World from a log of 1,000,000 real events (issue: Actors and state machines, replay target).

Setup (not timed): a log written through ``EventLog`` with the real Want/Partition/JobRun events: units of
one run over one partition (JobRunQueued, PartitionBuilding, JobRunStarted, JobRunSucceeded, PartitionLive)
plus a want per 100 partitions (WantCreated, WantBuilding, WantSucceeded).
Timed: ``actors.rebuild(log)`` (read, decode, fold through the transition functions). Baseline in the same
run: the same read + decode through ``read_batches`` without folding.
Usage: python bench/replay_world.py [--events 1000000] [--repeat 3]
Last line: events_per_s=... baseline_events_per_s=... ratio=...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors import (
    JobRunQueued,
    JobRunStarted,
    JobRunSucceeded,
    PartitionBuilding,
    PartitionLive,
    WantBuilding,
    WantCreated,
    WantSucceeded,
    rebuild,
)
from eventlog import EventLog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


async def write(path: Path, n_events: int) -> int:
    async with EventLog.open(path, autocommit=False) as log:
        pending: list[asyncio.Task[object]] = []
        count = 0
        i = 0
        while count < n_events:
            if i % 100 == 0:
                w = f"w-{i // 100:08d}"
                refs = tuple(f"daily/{j}" for j in range(i, i + 100))
                pending.append(asyncio.ensure_future(log.append("want", w, 0, WantCreated(refs=refs))))
                pending.append(asyncio.ensure_future(log.append("want", w, 1, WantBuilding())))
                count += 2
            r, p = f"r-{i:08d}", f"daily/{i}"
            for kind, eid, seq, ev in (
                ("job_run", r, 0, JobRunQueued(job="daily", partitions=(p,), wants=(f"w-{i // 100:08d}",))),
                ("partition", p, 0, PartitionBuilding(job_run_id=r)),
                ("job_run", r, 1, JobRunStarted(partitions=(p,), generations=(1,))),
                ("job_run", r, 2, JobRunSucceeded()),
                ("partition", p, 1, PartitionLive(job_run_id=r)),
            ):
                pending.append(asyncio.ensure_future(log.append(kind, eid, seq, ev)))
            count += 5
            i += 1
            if i % 100 == 0:
                w = f"w-{(i - 1) // 100:08d}"
                pending.append(asyncio.ensure_future(log.append("want", w, 2, WantSucceeded())))
                count += 1
            if len(pending) >= 20_000:
                await asyncio.sleep(0)
                await log.commit()
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.sleep(0)
        await log.commit()
        await asyncio.gather(*pending)
        return log.last_seq


async def measure(path: Path) -> tuple[float, float, int]:
    async with EventLog.open(path, writer=False) as log:
        t0 = time.perf_counter()
        n = 0
        async for batch in log.read_batches(1):
            n += len(batch)
        base = time.perf_counter() - t0
        t0 = time.perf_counter()
        world = await rebuild(log)
        fold = time.perf_counter() - t0
        assert world.last_seq == n
        assert world.counts()["partition"]["Live"] == len(world.partitions)
        return n / fold, n / base, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "replay.db"
        t0 = time.perf_counter()
        total = asyncio.run(write(path, a.events))
        print(f"wrote {total:,} events in {time.perf_counter() - t0:.1f}s")
        runs = [asyncio.run(measure(path)) for _ in range(a.repeat)]
    eps = statistics.median(r[0] for r in runs)
    base = statistics.median(r[1] for r in runs)
    print(f"rebuild World: {eps:,.0f} events/s; read + decode only: {base:,.0f} events/s (medians of {a.repeat})")
    print(f"events_per_s={eps:.0f} baseline_events_per_s={base:.0f} ratio={eps / base:.3f}")


if __name__ == "__main__":
    main()
