"""A taint that cascades over 100,000 downstream partitions, in one command (issue 11: no quadratic work, one
event per partition at most).

Setup (not timed): a log written straight through ``EventLog.append``: ``dims/1`` (a dimension table) and N
partitions ``fact/{i}`` built from it by runs of 500 (each run read ``dims/1@1``). A runtime opens the log.
Timed: ``rt.taint("dims/1", ...)`` until its first wave is applied (``TaintApplied``): the cascade computed from
the lineage index, N + 1 partitions tainted by the Taint actor, each one event, all committed. Checked: exactly one
``PartitionTainted`` per partition, none twice. Baseline in the same run, on a copy of the log: the same N + 1
partitions named in one taint without cascade (what tainting them costs without the lineage walk). The cascade
is also timed at N/10: growth = (time per partition at N) / (time per partition at N/10), 1.0 being linear.
Usage: python bench/taint_cascade.py [--partitions 100000] [--repeat 1]
Last line: partitions=... cascade_s=... partitions_per_s=... baseline_s=... ratio=... growth=...
events_per_partition=...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _history import History  # bench/, the script's own folder

from eventlog import EventLog
from supervisor import Graph, JobContext, open_runtime

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def graph() -> Graph:
    g = Graph("cascade")

    @g.job("dims", outputs="dims/{i}")
    async def dims(ctx: JobContext) -> None:
        return None

    @g.job("fact", outputs="fact/{i}", batch=500)
    async def fact(ctx: JobContext) -> None:
        return None

    return g


async def write(path: Path, n: int) -> None:
    async with EventLog.open(path, autocommit=False, fingerprint=graph().fingerprint()) as log:
        h = History(log)
        await h.build("dims", [("dims/1", [])])
        await h.build("fact", [(f"fact/{i}", ["dims/1"]) for i in range(n)])
        await h.flush()


async def taint(path: Path, n: int, cascade: bool) -> tuple[float, int]:
    """Seconds to taint (until applied), and the most PartitionTainted events any partition got."""
    refs = ["dims/1"] if cascade else ["dims/1", *(f"fact/{i}" for i in range(n))]
    async with open_runtime(path, graph(), tune_gc=True) as rt:
        t0 = time.perf_counter()
        st = await rt.taint(refs, "the dimension table was loaded twice", cascade=cascade, timeout=3600)
        dt = time.perf_counter() - t0
        assert st.tainted == n + 1, st
        per = Counter(r.entity_id for r in await rt.history(types=["PartitionTainted"]))
        assert len(per) == n + 1
    return dt, max(per.values())


async def once(root: Path, n: int) -> dict[str, float]:
    root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - set-up, not timed
    base = root / f"history-{n}.db"
    await write(base, n)
    a, b = root / f"a-{n}.db", root / f"b-{n}.db"
    shutil.copy(base, a)
    shutil.copy(base, b)
    cascade_s, most = await taint(a, n, cascade=True)
    baseline_s, _ = await taint(b, n, cascade=False)
    return {"cascade_s": cascade_s, "baseline_s": baseline_s, "most": most}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    n = a.partitions
    with tempfile.TemporaryDirectory() as d:
        full = [await once(Path(d) / f"r{i}", n) for i in range(a.repeat)]
        small = [await once(Path(d) / f"s{i}", n // 10) for i in range(a.repeat)]
    cascade_s = statistics.median(r["cascade_s"] for r in full)
    baseline_s = statistics.median(r["baseline_s"] for r in full)
    small_s = statistics.median(r["cascade_s"] for r in small)
    most = max(r["most"] for r in full + small)
    print(f"cascade over {n + 1:,} partitions: {cascade_s:.2f} s ({(n + 1) / cascade_s:,.0f} partitions/s); "
          f"the same partitions named in one taint: {baseline_s:.2f} s; at {n // 10 + 1:,}: {small_s:.2f} s")
    print(f"at most {most} PartitionTainted per partition")
    growth = (cascade_s / (n + 1)) / (small_s / (n // 10 + 1))
    print(f"partitions={n + 1} cascade_s={cascade_s:.3f} partitions_per_s={(n + 1) / cascade_s:.1f} "
          f"baseline_s={baseline_s:.3f} ratio={cascade_s / baseline_s:.3f} growth={growth:.3f} "
          f"events_per_partition={most}")


if __name__ == "__main__":
    asyncio.run(main())
