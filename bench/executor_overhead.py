"""What wantbuild adds to a cluster engine: no-op job runs through wantbuild vs the same tasks submitted directly.

Dask: a ``LocalCluster`` of two worker processes (loopback, no dashboard). Baseline: ``--runs`` no-op functions
submitted with ``client.submit`` and collected with ``client.gather`` (an asynchronous client). wantbuild: one
want for ``--runs`` partitions of a no-op async job (batch 1, so one run and one task per partition) on a
``DaskExecutor`` on the same cluster, the event log on disk, every transition durable. The two alternate
``--repeat`` times in one run; figures are medians. ratio = baseline time / wantbuild time (1.0: no overhead).
Target (issue 13): dask_ratio >= 0.5.

Ray (``--ray``, reported, no target): the same against ``ray.remote`` tasks awaited together, on a local Ray.

Usage: python bench/executor_overhead.py [--runs 2000] [--repeat 3] [--ray]
Last line: dask_baseline_s=... dask_wantbuild_s=... dask_ratio=... [ray_baseline_s=... ray_wantbuild_s=...
ray_ratio=...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supervisor import Graph, JobContext, open_runtime
from supervisor._executors import DaskExecutor, Executor, RayExecutor

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Read when ray is imported: keeps the local Ray on 127.0.0.1 (else it listens on every interface).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def noop(i: int) -> int:
    return i


async def noop_job(ctx: JobContext) -> None:
    return None


def graph(executor: Executor) -> Graph:
    g = Graph("bench", default_executor=executor)
    g.job("noop", outputs="noop/{i}")(noop_job)
    return g


async def through_wantbuild(executor: Executor, runs: int, round_: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_runtime(Path(tmp) / "wb.db", graph(executor), tune_gc=True) as rt:
            t0 = time.perf_counter()
            h = await rt.want([f"noop/{round_}-{i}" for i in range(runs)])
            st = await h.done(timeout=600)
            elapsed = time.perf_counter() - t0
            assert str(st.status) == "Successful", st
            assert len(rt.runs()) == runs
    return elapsed


async def dask_baseline(address: str, runs: int) -> float:
    import distributed

    client: Any = distributed.Client
    async with client(address, asynchronous=True) as client:
        t0 = time.perf_counter()
        futures = [client.submit(noop, i, pure=False) for i in range(runs)]
        results = await client.gather(futures)
        elapsed = time.perf_counter() - t0
        assert results == list(range(runs))
    return elapsed


async def ray_baseline(runs: int) -> float:
    import ray

    task = ray.remote(max_retries=0)(noop)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[task.remote(i) for i in range(runs)])
    elapsed = time.perf_counter() - t0
    assert list(results) == list(range(runs))
    return elapsed


def figures(name: str, base: list[float], wb: list[float]) -> str:
    b, w = statistics.median(base), statistics.median(wb)
    print(f"{name}: baseline {', '.join(f'{x:.2f}' for x in base)} s; wantbuild {', '.join(f'{x:.2f}' for x in wb)}"
          f" s; ratios {', '.join(f'{x / y:.2f}' for x, y in zip(base, wb, strict=True))}", file=sys.stderr)
    return f"{name}_baseline_s={b:.3f} {name}_wantbuild_s={w:.3f} {name}_ratio={b / w:.2f}"


async def bench_dask(runs: int, repeat: int) -> str:
    import distributed

    local_cluster: Any = distributed.LocalCluster
    async with local_cluster(processes=True, n_workers=2, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                            asynchronous=True) as cluster:
        executor = DaskExecutor(address=cluster.scheduler_address)
        base: list[float] = []
        wb: list[float] = []
        await dask_baseline(cluster.scheduler_address, 200)  # warm the workers up
        for r in range(repeat):
            base.append(await dask_baseline(cluster.scheduler_address, runs))
            wb.append(await through_wantbuild(executor, runs, r))
    return figures("dask", base, wb)


async def bench_ray(runs: int, repeat: int) -> str:
    import ray

    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=2, log_to_driver=False)
    try:
        executor = RayExecutor()
        base: list[float] = []
        wb: list[float] = []
        await ray_baseline(200)
        for r in range(repeat):
            base.append(await ray_baseline(runs))
            wb.append(await through_wantbuild(executor, runs, r))
    finally:
        ray.shutdown()
    return figures("ray", base, wb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also measure Ray (takes a few more seconds)")
    args = parser.parse_args()
    line = asyncio.run(bench_dask(args.runs, args.repeat))
    if args.ray:
        line += " " + asyncio.run(bench_ray(args.runs, args.repeat))
    print(line)


if __name__ == "__main__":
    main()

