"""Memory that follows active work (issue 15): resident memory of a runtime after a 1,000,000-partition backfill.

The backfill is ``bench/backfill.py``'s: one range want over 1,000,000 days of ``daily/{date}`` (batches of 500,
no-op jobs), the log a SQLite file, background snapshots off. Each variant runs in a process of its own (resident
memory is a process's), the same script, one after the other:

- ``baseline``: the runtime as it is by default (every state stays in the World);
- ``evict``: ``wantbuild.open(evict_every=50_000)``: settled entities leave memory as the backfill goes.

For each: ``rss_mb``, the process's resident memory once the want is Successful and a collection has run (what the
runtime holds with nothing in flight; target <= 300 MB for ``evict``); ``peak_rss_mb``; ``partitions_per_s``. The
evict variant then wants 1,000 of the built partitions again, spread over the range (every one is evicted, so each
is read back from the log) and reports ``rewant_ms``, until that want is Successful (all Live, nothing to build).

Usage: python bench/memory.py [--scale 1.0]    (0.1: 100,000 partitions, for a quick look)
Last line: rss_mb=... baseline_rss_mb=... ratio=... peak_rss_mb=... baseline_peak_rss_mb=... partitions_per_s=...
baseline_partitions_per_s=... rewant_ms=...
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backfill import daily_graph, last_day  # bench/, the script's own folder

from supervisor import open_runtime, parse_partition_set

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
EVICT_EVERY = 50_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def backfill(n: int, evict: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        g = daily_graph()
        parts = parse_partition_set(g, [f"daily/0001-01-01..{last_day(n)}"])
        async with open_runtime(Path(d) / "bench.db", g, tune_gc=True, snapshot_every=None, snapshot_interval=None,
                                evict_every=EVICT_EVERY if evict else None) as rt:
            t0 = time.perf_counter()
            st = await (await rt.want(parts)).done()
            took = time.perf_counter() - t0
            assert str(st.status) == "Successful", st
            await anyio.sleep(0.05)  # the last sweep runs at the loop's next turn
            gc.collect()
            out = {"rss_mb": rss_mb(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "partitions_per_s": n / took, "resident_partitions": float(len(rt.world.partitions))}
            if evict:
                day0 = dt.date(1, 1, 1)
                again = [f"daily/{(day0 + dt.timedelta(days=i)).isoformat()}" for i in range(0, n, max(n // 1000, 1))]
                assert all(rt.world.is_evicted("partition", r) for r in again)
                t1 = time.perf_counter()
                st = await (await rt.want(again)).done()
                out["rewant_ms"] = (time.perf_counter() - t1) * 1000
                assert str(st.status) == "Successful", st
                assert rt.world.counts()["partition"]["Live"] == n
            return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the size (0.1 for a quick look)")
    ap.add_argument("--variant", choices=["baseline", "evict"], help=argparse.SUPPRESS)  # one child process
    a = ap.parse_args()
    n = int(1_000_000 * a.scale)
    if a.variant is not None:
        print(json.dumps(anyio.run(backfill, n, a.variant == "evict")))
        return
    got = {}
    for variant in ("baseline", "evict"):
        proc = subprocess.run([sys.executable, __file__, "--scale", str(a.scale), "--variant", variant],
                              capture_output=True, text=True, check=True)
        got[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = got[variant]
        print(f"{variant}: {n:,} partitions in {n / r['partitions_per_s']:.1f} s ({r['partitions_per_s']:,.0f}/s); "
              f"resident after {r['rss_mb']:,.0f} MB (peak {r['peak_rss_mb']:,.0f} MB), "
              f"{r['resident_partitions']:,.0f} partition states in memory")
    b, e = got["baseline"], got["evict"]
    print(f"evict: 1,000 evicted partitions wanted again: Successful in {e['rewant_ms']:.0f} ms")
    out = {"rss_mb": e["rss_mb"], "baseline_rss_mb": b["rss_mb"], "ratio": e["rss_mb"] / b["rss_mb"],
           "peak_rss_mb": e["peak_rss_mb"], "baseline_peak_rss_mb": b["peak_rss_mb"],
           "partitions_per_s": e["partitions_per_s"], "baseline_partitions_per_s": b["partitions_per_s"],
           "rewant_ms": e["rewant_ms"]}
    print(" ".join(f"{k}={v:.2f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
