"""Lineage queries over a 1,000,000-partition history (issue 11: under 50 ms for one partition, 5 levels down).

Setup (timed, but not the headline): a log written straight through ``EventLog.append`` with the events real
runs write: batches of 500 runs over ``raw/{d}`` -> ``clean/{d}`` -> ``daily/{d}`` -> ``rolling/{d}`` (each reads
the 7 dailies up to d) and ``weekly/{w}`` (7 dailies) -> ``monthly/{m}`` (its weeklies) -> ``quarterly/{q}`` (3
monthlies), every read recorded by generation with ``into``; one raw day in 20 was rebuilt (a second
generation, and its clean and daily partitions with it). Then ``actors.rebuild`` (which builds the lineage index
as runs succeed, as the live runtime does).

Timed: ``actors.lineage(world, ref, direction="down", depth=5)`` from raw partitions spread over the history,
and ``direction="up"`` (all levels) from quarterly reports. Baseline in the same run: the same down walk without
the index, scanning every Succeeded run's reads once per level (what a lineage query costs without it).
Usage: python bench/lineage.py [--days 240000] [--queries 200]
Last line: partitions=... down5_ms_p50=... down5_ms_max=... up_ms_p50=... nodes_down5=... baseline_down5_ms=...
speedup=... index_mb=... write_s=... rebuild_s=...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _history import History  # bench/, the script's own folder

from actors import JobRunStatus, World, lineage, rebuild
from eventlog import EventLog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def graph(days: int) -> Iterator[tuple[str, list[tuple[str, list[str]]]]]:
    """The jobs, upstream first: (job, [(ref, inputs)])."""
    d = range(days)
    yield "raw", [(f"raw/{i}", []) for i in d]
    yield "clean", [(f"clean/{i}", [f"raw/{i}"]) for i in d]
    yield "daily", [(f"daily/{i}", [f"clean/{i}"]) for i in d]
    yield "rolling", [(f"rolling/{i}", [f"daily/{j}" for j in range(max(0, i - 6), i + 1)]) for i in d]
    weeks = days // 7
    yield "weekly", [(f"weekly/{w}", [f"daily/{7 * w + k}" for k in range(7)]) for w in range(weeks)]
    months = weeks // 4
    yield "monthly", [(f"monthly/{m}", [f"weekly/{4 * m + k}" for k in range(4)]) for m in range(months)]
    yield "quarterly", [(f"quarterly/{q}", [f"monthly/{3 * q + k}" for k in range(3)]) for q in range(months // 3)]


async def write(path: Path, days: int) -> int:
    async with EventLog.open(path, autocommit=False) as log:
        h = History(log)
        for job, items in graph(days):
            await h.build(job, items)
        rebuilt = range(0, days, 20)  # one raw day in 20 rebuilt, and its clean and daily partitions
        await h.build("raw", [(f"raw/{i}", []) for i in rebuilt])
        await h.build("clean", [(f"clean/{i}", [f"raw/{i}"]) for i in rebuilt])
        await h.build("daily", [(f"daily/{i}", [f"clean/{i}"]) for i in rebuilt])
        await h.flush()
        return h.partitions


def baseline_down(world: World, ref: str, depth: int) -> int:
    """The down walk without the index: every level scans every Succeeded run's reads for the frontier."""
    gen = world.partition(ref).generation
    frontier = {(ref, gen)}
    seen = set(frontier)
    runs = [r for r in world.runs.values() if r.status is JobRunStatus.SUCCEEDED]
    for _ in range(depth):
        nxt: set[tuple[str, int]] = set()
        wanted = {r: g for r, g in frontier}
        for run in runs:
            for inp, g in run.read.items():
                if wanted.get(inp) == g:
                    for out in run.into.get(inp, run.partitions):
                        node = (out, run.generations[run.partitions.index(out)])
                        if node not in seen:
                            seen.add(node)
                            nxt.add(node)
        frontier = nxt
    return len(seen)


def ms(f: object, *args: object, **kw: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = f(*args, **kw)  # type: ignore[operator]
    return (time.perf_counter() - t0) * 1000, out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=240_000, help="raw days: ~4.2 partitions per day in all")
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "lineage.db"
        t0 = time.perf_counter()
        partitions = await write(path, a.days)
        write_s = time.perf_counter() - t0
        print(f"history: {partitions:,} partitions written in {write_s:.1f} s")
        async with EventLog.open(path, writer=False) as log:
            t0 = time.perf_counter()
            world = await rebuild(log)
            rebuild_s = time.perf_counter() - t0
    print(f"rebuild with the lineage index: {world.last_seq:,} events in {rebuild_s:.1f} s")
    gc.freeze()
    rng = random.Random(11)
    days = [rng.randrange(a.days - 30) for _ in range(a.queries)]
    down = [ms(lineage, world, f"raw/{i}", direction="down", depth=5) for i in days]
    nodes = [len(g.nodes) for _, g in down]  # type: ignore[attr-defined]
    down_ms = [t for t, _ in down]
    quarters = max(1, a.days // 7 // 4 // 3)
    up = [ms(lineage, world, f"quarterly/{rng.randrange(quarters)}", direction="up") for _ in range(20)]
    up_ms = [t for t, _ in up]
    up_nodes = [len(g.nodes) for _, g in up]  # type: ignore[attr-defined]
    base_ms = [ms(baseline_down, world, f"raw/{i}", 5) for i in days[:3]]
    assert all(n == len(g.nodes) for (_, n), (_, g) in zip(base_ms, down, strict=False))  # type: ignore[attr-defined]
    p50 = statistics.median(down_ms)
    base = statistics.median(t for t, _ in base_ms)
    print(f"down 5 levels from a raw partition: median {p50:.3f} ms, max {max(down_ms):.3f} ms, "
          f"{statistics.median(nodes):.0f} nodes (target < 50 ms)")
    print(f"up all levels from a quarterly report: median {statistics.median(up_ms):.2f} ms, "
          f"{statistics.median(up_nodes):.0f} nodes")
    print(f"baseline (no index, a scan of every run's reads per level): {base:.0f} ms for the same down walk")
    figures = {"partitions": partitions, "down5_ms_p50": p50, "down5_ms_max": max(down_ms),
               "up_ms_p50": statistics.median(up_ms), "nodes_down5": statistics.median(nodes),
               "baseline_down5_ms": base, "speedup": base / p50, "index_mb": world.lineage.nbytes() / 2**20,
               "write_s": write_s, "rebuild_s": rebuild_s}
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    asyncio.run(main())
