"""Restart of a big log to serving, from a snapshot vs a full replay; and what taking snapshots costs the writer.

Set-up (not timed): a real log of ``--events`` events written straight into SQLite (``bench/_rawlog.py``): rounds of
a want of 1,000 ``daily/{i}`` partitions built by runs of ``--batch`` (lease, start, settle), over a universe of
``events / 8`` partitions, so each is built about three times (tainted and rebuilt) over the log's life; then one
snapshot ``--tail`` events before the end (half the runtime's default ``snapshot_every``: the expected distance).

Timed, alternating in one process (``--repeat`` pairs): ``wantbuild.open`` on the log until serving (the runtime
is open and has accepted a want for a new partition), once replaying the whole log (``load_snapshot=False``, the
baseline) and once from the snapshot. ``ratio`` = full / snapshot (median of the pairs).

Writer stall (``--load-seconds``, 0 to skip): on the same log's World, 200 tasks drive partitions through their
states flat out, each transition appended, committed and put in the World as an entity actor does, for that long;
once without snapshots and once with a snapshot every ``--snapshot-every`` events. Reported: the longest gap between
two commits while a snapshot was being taken against the longest with none, the longest copy of the tables, and the
longest step of a snapshot holding the event loop (the copy or one chunk's encoding).

``--evict N``: both restarts open an evicting runtime (``evict_every=N``): from the snapshot, its settled entities
are left evicted, undecoded. ``--keep DIR``: the log is written once into DIR and reused by later runs.

Usage: python bench/restart.py [--events 1000000] [--repeat 3] [--load-seconds 10] [--evict N] [--keep DIR]
Last line: events=... restart_s=... full_replay_s=... ratio=... snapshot_load_s=... tail_events=...
max_gap_ms=... (while snapshotting) max_gap_baseline_ms=... (whole run, no snapshots) max_cpu_gap_ms=...
max_cpu_gap_baseline_ms=... (the same in the loop thread's CPU time: robust to a busy machine) max_copy_ms=...
max_step_ms=...
snapshots_taken=... rss_mb=...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _rawlog import RawLog  # bench/, the script's own folder

import wantbuild
from actors import (
    SNAPSHOT_FORMAT,
    JobRunQueued,
    JobRunStarted,
    JobRunSucceeded,
    PartitionBuilding,
    PartitionLive,
    PartitionStatus,
    PartitionTainted,
    Snapshotter,
    WantBuilding,
    WantCreated,
    WantSucceeded,
    apply_partition,
    encode_world,
    rebuild,
)
from eventlog import EventLog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

WANT_SIZE = 1000


def graph() -> wantbuild.Graph:
    g = wantbuild.Graph("restart-bench")

    @g.job("daily", outputs="daily/{i}", batch=500)
    async def daily(ctx: wantbuild.JobContext) -> None:
        return None

    return g


def write_log(path: Path, n_events: int, batch: int) -> int:
    """The log described in the module docstring; returns its last seq."""
    raw = RawLog(path)
    universe = max(WANT_SIZE, n_events // 8 // WANT_SIZE * WANT_SIZE)
    built: set[int] = set()
    at = 1_790_000_000.0
    r = 0
    run_n = 0
    while raw.seq < n_events:
        block = (r * WANT_SIZE) % universe
        refs = [f"daily/{i}" for i in range(block, block + WANT_SIZE)]
        w = f"w-{r:08d}"
        if block in built:
            for ref in refs:
                raw.add("partition", ref, PartitionTainted(reason="late rows"), at)
        built.add(block)
        raw.add("want", w, WantCreated(refs=tuple(refs)), at)
        raw.add("want", w, WantBuilding(), at)
        for i in range(0, WANT_SIZE, batch):
            part = tuple(refs[i:i + batch])
            run = f"r-{run_n:08d}"
            run_n += 1
            at += 0.01
            raw.add("job_run", run, JobRunQueued(job="daily", partitions=part, wants=(w,)), at)
            for ref in part:
                raw.add("partition", ref, PartitionBuilding(job_run_id=run), at)
            raw.add("job_run", run, JobRunStarted(partitions=part, generations=(1,) * len(part)), at)
            raw.add("job_run", run, JobRunSucceeded(), at)
            for ref in part:
                raw.add("partition", ref, PartitionLive(job_run_id=run), at)
        raw.add("want", w, WantSucceeded(), at)
        r += 1
    raw.close()
    return raw.seq


async def snapshot_at(path: Path, seq: int) -> tuple[int, int]:
    """Write a snapshot covering events 1..seq (what a runtime's snapshotter would have written); its sizes."""
    async with EventLog.open(path) as log:
        world = await rebuild(log, until_seq=seq, snapshots=False)
        info = await log.write_snapshot(world.last_seq, world.last_at, SNAPSHOT_FORMAT, encode_world(world))
        return info.size, info.stored


async def restart(path: Path, g: wantbuild.Graph, k: int, use_snapshot: bool,
                  evict: int | None = None) -> tuple[float, float, int]:
    """Seconds from ``wantbuild.open`` to a want accepted; the snapshot load's share; events replayed."""
    t0 = time.perf_counter()
    async with wantbuild.open(path, g, tune_gc=True, load_snapshot=use_snapshot, snapshot_every=None,
                              snapshot_interval=None, shutdown_grace=1.0, evict_every=evict) as rt:
        await rt.want([f"daily/new-{k}-{int(use_snapshot)}"])
        serving = time.perf_counter() - t0
        restored = rt.recovery.restored
        assert restored is not None
        assert (restored.snapshot_seq is not None) == use_snapshot, restored
        await rt.wait_idle(timeout=60)
    return serving, restored.snapshot_seconds, restored.tail_events


async def writer_load(path: Path, seconds: float, every: int | None
                      ) -> tuple[list[float], Snapshotter, list[str], list[float]]:
    """Drive the log's writer flat out for ``seconds`` on the World of the log at ``path``: 200 tasks, each
    taking partitions through Live -> Tainted -> Building -> Live the way an entity actor does (append, commit,
    then ``World.put``), with a :class:`Snapshotter` taking snapshots every ``every`` events (None: never).
    Returns the commit times (one per committed append, ``time.perf_counter()``), the snapshotter, what the
    snapshotter was doing at each commit (``Snapshotter.phase``) and the loop thread's CPU time at each commit
    (``time.thread_time()``: a gap in it is work that held the loop, not time the machine gave another process)."""
    times: list[float] = []
    phases: list[str] = []
    cpu: list[float] = []
    async with EventLog.open(path) as log:
        world = await rebuild(log)
        gc.collect()  # the runtime's tune_gc policy (the CLI's): the World frozen, young collections rare
        gc.freeze()
        gc.set_threshold(1_000_000, 20, 100)
        snap = Snapshotter(log, world, every_events=every, every_seconds=None, check_interval=0.05)
        refs = [ref for ref, st in world.partitions.items() if st.status is PartitionStatus.LIVE]
        cycle = (lambda: PartitionTainted(reason="bench"), lambda: PartitionBuilding(job_run_id="r-bench"),
                 lambda: PartitionLive(job_run_id="r-bench"))
        deadline = time.perf_counter() + seconds

        async def drive(mine: list[str]) -> None:
            while time.perf_counter() < deadline:
                for ref in mine:
                    for make in cycle:
                        ev = make()
                        st = world.partitions[ref]
                        new = apply_partition(st, ev, ref, 0.0, st.entity_seq + 1)
                        rec = await log.append("partition", ref, st.entity_seq, ev, 0.0)
                        world.put("partition", ref, new, rec.seq, rec.at)
                        times.append(time.perf_counter())
                        cpu.append(time.thread_time())
                        phases.append(snap.phase)

        async with anyio.create_task_group() as tg:
            if every is not None:
                tg.start_soon(snap.run)
            async with anyio.create_task_group() as load:
                for i in range(200):
                    load.start_soon(drive, refs[i::200][:50])
            tg.cancel_scope.cancel()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    return times, snap, phases, cpu


def longest_gap(times: list[float], spans: list[tuple[float, float]] | None = None) -> float:
    """The longest time between two commits (within one of ``spans``, if given)."""
    gaps = [(b - a, a, b) for a, b in itertools.pairwise(sorted(set(times)))]
    if spans is not None:
        gaps = [g for g in gaps if any(g[1] < e and g[2] > s for s, e in spans)]
    return max((g[0] for g in gaps), default=0.0)


def _copy_db(src: Path, dst: Path) -> None:
    for extra in (dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
        extra.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def prepare(a: argparse.Namespace, tmp: Path) -> tuple[Path, int]:
    """The bench's log (and its last seq): written (and snapshotted) in ``tmp``, or kept in / reused from
    ``--keep``."""
    if a.keep is None:
        path = tmp / "restart.db"
    else:
        a.keep.mkdir(parents=True, exist_ok=True)
        path = a.keep / f"restart-{a.events}-{a.batch}-{a.tail}.db"
        pristine = path.with_suffix(".pristine.db")
        if pristine.exists():  # the log as written: copied over whatever the last run appended
            with sqlite3.connect(pristine) as db:
                (n,) = db.execute("SELECT max(seq) FROM events").fetchone()
                formats = {f for (f,) in db.execute("SELECT format FROM snapshots")}
            if SNAPSHOT_FORMAT not in formats:  # written by another wantbuild: its snapshot again, in this format
                asyncio.run(snapshot_at(pristine, n - a.tail))
            _copy_db(pristine, path)
            print(f"reusing {pristine} ({n:,} events)", flush=True)
            return path, int(n)
    t0 = time.perf_counter()
    n = write_log(path, a.events, a.batch)
    size, stored = asyncio.run(snapshot_at(path, n - a.tail))
    print(f"wrote {n:,} events in {time.perf_counter() - t0:.1f}s; snapshot at seq {n - a.tail:,}: "
          f"{size / 1e6:.1f} MB ({stored / 1e6:.1f} MB stored)", flush=True)
    if a.keep is not None:
        _copy_db(path, path.with_suffix(".pristine.db"))
    return path, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--tail", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--snapshot-every", type=int, default=20_000)
    ap.add_argument("--evict", type=int, default=None,
                    help="restart an evicting runtime (evict_every=N): from the snapshot, its settled entities stay "
                         "evicted (docs/restart.md)")
    ap.add_argument("--skip-full", action="store_true",
                    help="time the restart from the snapshot only (for A/B runs; full_replay_s and ratio read 0)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="a folder to keep the log in and reuse it from (the same --events/--batch/--tail: its "
                         "name says them; the restarts' new wants are removed first), instead of a temporary one")
    a = ap.parse_args()
    g = graph()
    with tempfile.TemporaryDirectory() as d:
        path, n = prepare(a, Path(d))
        full, snap, loads, tails = [], [], [], []
        for k in range(a.repeat):
            f = 0.0 if a.skip_full else asyncio.run(restart(path, g, k, False, a.evict))[0]
            s, load, tail = asyncio.run(restart(path, g, k, True, a.evict))
            full.append(f)
            snap.append(s)
            loads.append(load)
            tails.append(tail)
            print(f"  pair {k + 1}: full replay {f:.2f}s, from snapshot {s:.2f}s (load {load:.2f}s, "
                  f"{tail:,} events replayed after it)", flush=True)
        ratios = [f / s for f, s in zip(full, snap, strict=True)]  # 0 with --skip-full
        gap = gap_base = copy = step = cpu_gap = cpu_gap_base = 0.0
        taken = 0
        if a.load_seconds:
            base_times, _, _, base_cpu = anyio.run(writer_load, path, a.load_seconds, None)
            times, snapper, phases, cpu = anyio.run(writer_load, path, a.load_seconds, a.snapshot_every)
            gap, gap_base = longest_gap(times, snapper.spans), longest_gap(base_times)
            by_phase: dict[str, tuple[float, float]] = {}
            for (t0, c0, p0), (t1, c1, _) in itertools.pairwise(zip(times, cpu, phases, strict=True)):
                w, c = by_phase.get(p0, (0.0, 0.0))
                by_phase[p0] = (max(w, t1 - t0), max(c, c1 - c0))
            cpu_gap = max((g[1] for p, g in by_phase.items() if p != "idle"), default=0.0)
            cpu_gap_base = max((c1 - c0 for c0, c1 in itertools.pairwise(base_cpu)), default=0.0)
            print("longest gap between commits (wall / the loop thread's CPU) by what the snapshotter was doing as "
                  "it began: " + ", ".join(f"{p} {w * 1e3:.1f} / {c * 1e3:.1f} ms"
                                          for p, (w, c) in sorted(by_phase.items())), flush=True)
            copy, step, taken = max(snapper.copy_seconds, default=0.0), snapper.max_step_seconds, len(snapper.taken)
            print(f"writer under load for {a.load_seconds:.0f}s: {len(base_times) / a.load_seconds:,.0f} commits/s "
                  f"without snapshots, {len(times) / a.load_seconds:,.0f}/s with {taken} (every "
                  f"{a.snapshot_every:,} events); longest gap between commits {gap * 1e3:.1f} ms while a snapshot "
                  f"was taken, {gap_base * 1e3:.1f} ms without snapshots; longest table copy {copy * 1e3:.2f} ms, "
                  f"longest step holding the loop {step * 1e3:.2f} ms", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"events={n} restart_s={statistics.median(snap):.3f} full_replay_s={statistics.median(full):.3f} "
          f"ratio={statistics.median(ratios):.2f} snapshot_load_s={statistics.median(loads):.3f} "
          f"tail_events={statistics.median(tails):.0f} max_gap_ms={gap * 1e3:.1f} "
          f"max_gap_baseline_ms={gap_base * 1e3:.1f} max_cpu_gap_ms={cpu_gap * 1e3:.1f} "
          f"max_cpu_gap_baseline_ms={cpu_gap_base * 1e3:.1f} max_copy_ms={copy * 1e3:.2f} max_step_ms={step * 1e3:.2f} "
          f"snapshots_taken={taken} "
          f"rss_mb={rss:.0f}")


if __name__ == "__main__":
    main()
