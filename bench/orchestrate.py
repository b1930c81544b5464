"""End-to-end orchestration throughput and dependency latency (issue: Supervisor benchmark).

Graph ``raw/{i}`` -> ``daily/{i}``: daily discovers raw as a missing dependency; no-op in-process jobs; the
log on disk. One want covers all daily partitions (a backfill).

(a) one run per partition: 10,000 partitions (and 1,000 for the growth ratio)
(b) batches of 500: 100,000 partitions (and 10,000)
--reads: every daily partition declares that it reads its raw partition (``ctx.read_many``, recorded by
generation in its run's terminal event: the lineage), instead of checking a set of built refs.
chain: ``step/{i}`` needs ``step/{i-1}``, 1,000 deep, each link discovered as a missing dependency.

growth = (time per partition at full size) / (time per partition at one tenth): 1.0 is linear.
The ``*_cpu_*`` figures are the process's CPU time for the full-size case (on a shared machine they move less
than wall time; the job runs' threads are included); ``growth_batched_cpu`` is (b)'s growth in CPU time.
Usage: python bench/orchestrate.py [--scale 1.0] [--repeat 1] [--split] [--default-gc] [--reads]
                                   [--db postgresql://...]
Last line: per_run_partitions_per_s=... batched_partitions_per_s=... peak_rss_mb=... growth_per_run=...
growth_batched=... chain_ms_per_link=...

``--db postgresql://USER:PW@HOST/DB`` (or ``--db postgres``: a throwaway server from Debian's binaries) also runs
case (b) at full size with the log in PostgreSQL, right after the SQLite one, and adds
``pg_batched_partitions_per_s=... pg_ratio_to_sqlite=...`` (each PostgreSQL run in a fresh schema).
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory_commits import skip_durability  # bench/, the script's own folder
from _pg import drop_schema, schema_url, server

from eventlog import open_log
from supervisor import Graph, JobContext, MissingDeps, open_runtime

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
TUNE_GC = True  # as `wantbuild run` runs it; --default-gc measures with Python's default thresholds
READS = False  # --reads: daily declares its raw input through ctx.read_many (lineage recorded)


def two_level(batch: int) -> Graph:
    g = Graph("bench")
    built: set[str] = set()

    @g.job("raw", outputs="raw/{i}", batch=batch)
    async def raw(ctx: JobContext) -> None:
        built.update(ctx.partitions)

    @g.job("daily", outputs="daily/{i}", batch=batch)
    async def daily(ctx: JobContext) -> None:
        if READS:  # MissingDeps for every raw partition that is not Live, else each read recorded
            ctx.read_many({f"raw/{p['i']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})
            built.update(ctx.partitions)
            return
        missing = [f"raw/{p['i']}" for p in ctx.params if f"raw/{p['i']}" not in built]
        if missing:
            raise MissingDeps(missing)
        built.update(ctx.partitions)

    return g


def chain(depth: int) -> Graph:
    g = Graph("chain")
    built: set[str] = set()

    @g.job("step", outputs="step/{i}")
    async def step(ctx: JobContext) -> None:
        for p in ctx.params:
            i = int(p["i"])
            if i > 1 and f"step/{i - 1}" not in built:
                raise MissingDeps([f"step/{i - 1}"])
        built.update(ctx.partitions)

    return g


async def run_two_level(n: int, batch: int, durable: bool = True, pg: str | None = None) -> float:
    with tempfile.TemporaryDirectory() as d:
        g = two_level(batch)
        target = str(Path(d) / "bench.db")
        if pg is not None:
            await drop_schema(pg, "bench_orchestrate")
            target = schema_url(pg, "bench_orchestrate")
        async with open_log(target, fingerprint=g.fingerprint()) as log:
            if not durable:
                skip_durability(log)
            # after skip_durability: the runtime's kernel takes the log's submit when it starts
            async with open_runtime(target, g, tune_gc=TUNE_GC, event_log=log, log_dir=Path(d) / "logs") as rt:
                t0 = time.perf_counter()
                h = await rt.want([f"daily/{i}" for i in range(n)])
                st = await h.done()
                dt = time.perf_counter() - t0
                assert str(st.status) == "Successful", st
                return dt


async def run_chain(depth: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with open_runtime(Path(d) / "chain.db", chain(depth), tune_gc=TUNE_GC) as rt:
            t0 = time.perf_counter()
            st = await (await rt.want(f"step/{depth}")).done()
            dt = time.perf_counter() - t0
            assert str(st.status) == "Successful", st
            return dt


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (0.1 for a quick look)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", choices=["per_run", "batched", "chain"], action="append")
    ap.add_argument("--default-gc", action="store_true", help="do not tune the GC (open_runtime(tune_gc=False))")
    ap.add_argument("--reads", action="store_true", help="daily partitions declare their reads (lineage)")
    ap.add_argument("--split", action="store_true",
                    help="also run (b) at one tenth with commits resolved in memory, to say what the log costs "
                         "(diagnostic, never the headline)")
    ap.add_argument("--db", default=None, metavar="URL",
                    help="also run (b) with the log in PostgreSQL at this URL ('postgres': start a throwaway server)")
    a = ap.parse_args()
    global TUNE_GC, READS
    TUNE_GC = not a.default_gc
    READS = a.reads
    print(f"gc: {'tuned by the runtime (tune_gc=True)' if TUNE_GC else 'Python defaults'}"
          f"{'; daily partitions declare their reads' if READS else ''}")
    only = set(a.only or ["per_run", "batched", "chain"])
    out: dict[str, float] = {}

    cpu: list[float] = []  # the process's CPU seconds of the last med() call's runs (median)

    def med(f: object, *args: int) -> float:
        walls: list[float] = []
        cpus: list[float] = []
        for _ in range(a.repeat):
            c0 = time.process_time()
            walls.append(anyio.run(f, *args))  # type: ignore[arg-type]
            cpus.append(time.process_time() - c0)
        cpu[:] = [statistics.median(cpus)]
        return statistics.median(walls)

    if "per_run" in only:
        n = int(10_000 * a.scale)
        small, full = med(run_two_level, n // 10, 1), med(run_two_level, n, 1)
        out["per_run_partitions_per_s"] = n / full
        out["per_run_cpu_us_per_partition"] = cpu[0] * 1e6 / n
        out["growth_per_run"] = (full / n) / (small / (n // 10))
        print(f"(a) one run per partition: {n // 10} in {small:.2f}s, {n} in {full:.2f}s -> {n / full:,.0f}/s")
    if "batched" in only:
        n = int(100_000 * a.scale)
        small = med(run_two_level, n // 10, 500)
        small_cpu = cpu[0]
        full = med(run_two_level, n, 500)
        out["batched_partitions_per_s"] = n / full
        out["batched_cpu_us_per_partition"] = cpu[0] * 1e6 / n
        out["growth_batched"] = (full / n) / (small / (n // 10))
        out["growth_batched_cpu"] = (cpu[0] / n) / (small_cpu / (n // 10))  # the load of the minute moves it less
        print(f"(b) batches of 500: {n // 10} in {small:.2f}s, {n} in {full:.2f}s -> {n / full:,.0f}/s")
    if a.split and "batched" in only:
        n = int(10_000 * a.scale)
        durable = med(run_two_level, n, 500)
        memory = statistics.median(anyio.run(run_two_level, n, 500, False) for _ in range(a.repeat))
        print(f"split (b) at {n}: {n / durable:,.0f}/s durable, {n / memory:,.0f}/s with commits resolved in memory "
              f"(not durable): the log is {100 * (1 - memory / durable):.0f}% of the time")
    if a.db is not None:
        with server(a.db) as url:
            n = int(100_000 * a.scale)
            sqlite_s = med(run_two_level, n, 500)
            pg_s = statistics.median(anyio.run(run_two_level, n, 500, True, url) for _ in range(a.repeat))
            anyio.run(drop_schema, url, "bench_orchestrate")
        out["pg_batched_partitions_per_s"] = n / pg_s
        out["pg_ratio_to_sqlite"] = sqlite_s / pg_s
        print(f"(b) on PostgreSQL, {n}: {pg_s:.2f}s -> {n / pg_s:,.0f}/s; SQLite in the same run {sqlite_s:.2f}s -> "
              f"{n / sqlite_s:,.0f}/s; ratio {sqlite_s / pg_s:.2f}")
    if "chain" in only:
        depth = max(10, int(1000 * a.scale))
        dt = med(run_chain, depth)
        out["chain_ms_per_link"] = dt * 1000 / depth
        out["chain_cpu_ms_per_link"] = cpu[0] * 1000 / depth
        print(f"chain of {depth}: {dt:.2f}s -> {dt * 1000 / depth:.2f} ms per link")
    out["peak_rss_mb"] = peak_rss_mb()
    keys = ["per_run_partitions_per_s", "batched_partitions_per_s", "peak_rss_mb", "growth_per_run",
            "growth_batched", "growth_batched_cpu", "chain_ms_per_link", "pg_batched_partitions_per_s",
            "pg_ratio_to_sqlite",
            "per_run_cpu_us_per_partition", "batched_cpu_us_per_partition", "chain_cpu_ms_per_link"]
    print(" ".join(f"{k}={out[k]:.2f}" for k in keys if k in out))


if __name__ == "__main__":
    main()
