"""A range want over 1,000,000 daily partitions with no-op jobs (issue 16): creation, throughput, memory.

One job ``daily/{date}`` (a typed date, batches of 500, no-op), the log on disk. The want is one range,
``daily/0001-01-01..2738-11-28`` (1,000,000 days), created through ``rt.want(parse_partition_set(...))``.

- ``create_s``: from calling ``rt.want`` on the parsed set to ``WantCreated`` committed (target <= 1 s);
- ``range_partitions_per_s``: partitions to Successful per second;
- ``peak_rss_mb``: the process's peak RSS right after the range want (measured before the baseline runs, so it
  is the range want's; target <= 1.5 GiB);
- the baseline, in the same run: ``bench/orchestrate.py`` case (b) (raw -> daily discovered as missing, batches of
  500, a list want of 100,000 daily partitions), ``baseline_b_partitions_per_s`` its daily partitions per second;
  ``ratio = range / baseline`` (target >= 0.9). ``list_partitions_per_s`` also runs this script's own graph as a
  list want of 100,000 refs, the same work per partition as the range want.

Usage: python bench/backfill.py [--scale 1.0]    (0.1: 100,000 partitions, for a quick look)
Last line: create_s=... range_partitions_per_s=... baseline_b_partitions_per_s=... ratio=... list_partitions_per_s=...
peak_rss_mb=...
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrate import run_two_level  # bench/, the script's own folder

from eventlog import EventLog
from supervisor import Graph, JobContext, open_runtime, parse_partition_set

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def daily_graph() -> Graph:
    g = Graph("backfill-bench")

    @g.job("daily", outputs="daily/{date}", params={"date": "date"}, batch=500)
    async def daily(ctx: JobContext) -> None:
        return None

    return g


def last_day(n: int) -> str:
    return (dt.date(1, 1, 1) + dt.timedelta(days=n - 1)).isoformat()


async def run_range(n: int) -> tuple[float, float]:
    """(seconds to create, seconds to Successful) for a range want over ``n`` days."""
    with tempfile.TemporaryDirectory() as d:
        g = daily_graph()
        parts = parse_partition_set(g, [f"daily/0001-01-01..{last_day(n)}"])
        assert len(parts) == n
        async with EventLog.open(Path(d) / "bench.db", fingerprint=g.fingerprint()) as log, \
                open_runtime(Path(d) / "bench.db", g, tune_gc=True, event_log=log) as rt:
            t0 = time.perf_counter()
            h = await rt.want(parts)
            created = time.perf_counter() - t0
            st = await h.done()
            total = time.perf_counter() - t0
            assert str(st.status) == "Successful", st
            return created, total


async def run_list(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        g = daily_graph()
        async with open_runtime(Path(d) / "bench.db", g, tune_gc=True) as rt:
            refs = [f"daily/{(dt.date(1, 1, 1) + dt.timedelta(days=i)).isoformat()}" for i in range(n)]
            t0 = time.perf_counter()
            st = await (await rt.want(refs)).done()
            assert str(st.status) == "Successful", st
            return time.perf_counter() - t0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the sizes (0.1 for a quick look)")
    a = ap.parse_args()
    n = int(1_000_000 * a.scale)
    created, total = anyio.run(run_range, n)
    peak = peak_rss_mb()
    print(f"range want of {n:,}: created in {created:.3f} s, Successful in {total:.1f} s -> {n / total:,.0f}/s; "
          f"peak RSS {peak:,.0f} MB")
    m = int(100_000 * a.scale)
    base = anyio.run(run_two_level, m, 500)
    print(f"baseline: orchestrate.py case (b), {m:,} partitions in {base:.1f} s -> {m / base:,.0f}/s")
    lst = anyio.run(run_list, m)
    print(f"same graph as a list want of {m:,}: {lst:.1f} s -> {m / lst:,.0f}/s")
    out = {"create_s": created, "range_partitions_per_s": n / total, "baseline_b_partitions_per_s": m / base,
           "ratio": (n / total) / (m / base), "list_partitions_per_s": m / lst, "peak_rss_mb": peak}
    print(" ".join(f"{k}={v:.3f}" if k == "create_s" else f"{k}={v:.2f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
