"""The web view on a big log (issue #14): time to first page, page times, server memory.

Setup (not timed): a log of ``--events`` (1,000,000) real, replayable events (``bench/_rawlog.py`` writes the
rows the log's writer would, 100,000 per transaction): a want of 10,000 partitions ``daily/{i}`` whose runs each
report ``raw/{i}`` missing (a derived want of 10,000 builds them; the dailies are then built), 80 wants of 1,000
``hourly/{i}`` partitions built in runs of 10 (one run in 37 fails first and is retried), then rounds of taints
and rebuilds of the hourlies until the log has ``--events`` events, the last want still building: 100,000
partitions in all.

Timed, against a real ``wantbuild ui --db LOG --port 0`` subprocess:

- ``first_page_s``: from starting the process until ``GET /`` answers 200 (it answers 503 "loading" while it
  replays the log);
- ``overview_ms``, ``want_10k_ms``, ``events_page_ms``: server time (its ``Server-Timing`` header) of the overview,
  the page of the want with 10,000 partitions and the events page, median of ``--repeat`` (20) requests each;
  the same for their JSON API twins, a filtered events page and a partition search (reported on stderr);
- ``rss_mb``: the server's peak resident memory (VmHWM) after all of that.

Baseline, in the same run: ``baseline_replay_ms``, the time to rebuild the World from this log in this process
(what every request would cost if the server replayed the log per request, as the CLI's ``status`` does).

Targets: each page under 200 ms, memory under 1 GiB.
Usage: ``python bench/web.py [--events 1000000] [--repeat 20] [--keep PATH]``
Last line: ``events=... first_page_s=... overview_ms=... want_10k_ms=... events_page_ms=... rss_mb=...
baseline_replay_ms=...``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _rawlog import RawLog  # bench/, the script's own folder

from actors import (
    JobRunDepMiss,
    JobRunFailed,
    JobRunQueued,
    JobRunStarted,
    JobRunSucceeded,
    PartitionBuilding,
    PartitionFailed,
    PartitionLive,
    PartitionMissing,
    PartitionTainted,
    PartitionUpstreamWaiting,
    WantBuilding,
    WantCreated,
    WantIdle,
    WantSucceeded,
    WantUpstreamBuilding,
    rebuild,
)
from eventlog import Event, EventLog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

BIG = "w-00000001"
BIG_SIZE = 10_000
HOURLY_WANTS = 80
HOURLY_PER_WANT = 1_000
BATCH = 10


class Writer:
    """The histories of the benchmark's wants, runs and partitions, in a legal order, one event at a time."""

    def __init__(self, log: RawLog) -> None:
        self.log = log
        self.count = 0
        self.clock = time.time() - 3 * 3600
        self.runs = 0
        self.wants = 0

    def add(self, kind: str, eid: str, ev: Event) -> None:
        self.clock += 0.005
        self.log.add(kind, eid, ev, self.clock)
        self.count += 1

    def run_id(self) -> str:
        self.runs += 1
        return f"r-{self.runs:08d}"

    def want_id(self) -> str:
        self.wants += 1
        return f"w-{self.wants:08d}"

    def fail(self, job: str, refs: tuple[str, ...], want: str) -> str:
        """A first attempt over ``refs`` that fails, with a retry to come."""
        run = self.run_id()
        self.add("job_run", run, JobRunQueued(job=job, partitions=refs, wants=(want,), max_attempts=3))
        for ref in refs:
            self.add("partition", ref, PartitionBuilding(job_run_id=run))
        self.add("job_run", run, JobRunStarted(partitions=refs))
        reason = "exited with 3: upstream file truncated"
        self.add("job_run", run, JobRunFailed(reason=reason, exit_code=3, will_retry=True, retry_delay=1.0))
        for ref in refs:
            self.add("partition", ref, PartitionFailed(job_run_id=run, reason=reason, final=False))
        return run

    def build(self, job: str, refs: tuple[str, ...], want: str, *, missing: tuple[str, ...] = (),
              retry_of: str | None = None) -> str:
        """One run over ``refs``: queued, leases, started, then succeeded (partitions Live) or DepMiss."""
        run = self.run_id()
        self.add("job_run", run, JobRunQueued(job=job, partitions=refs, wants=(want,), reason=f"serves {want}",
                                              attempt=2 if retry_of else 1, max_attempts=3 if retry_of else 1,
                                              retry_of=retry_of))
        for ref in refs:
            self.add("partition", ref, PartitionBuilding(job_run_id=run))
        self.add("job_run", run, JobRunStarted(partitions=refs, generations=tuple(1 for _ in refs)))
        if missing:
            self.add("job_run", run, JobRunDepMiss(missing=missing))
            for ref in refs:
                self.add("partition", ref, PartitionUpstreamWaiting(job_run_id=run))
        else:
            self.add("job_run", run, JobRunSucceeded())
            for ref in refs:
                self.add("partition", ref, PartitionLive(job_run_id=run))
        return run


def chunks(items: list[str], n: int) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(items), n):
        yield tuple(items[i:i + n])


def write_log(path: Path, n_events: int) -> tuple[int, int]:
    """Fill a fresh log at ``path`` (see the module docstring); returns (events, partitions)."""
    log = RawLog(path)
    try:
        w = Writer(log)
        daily = [f"daily/{i:05d}" for i in range(BIG_SIZE)]
        big = w.want_id()
        w.add("want", big, WantCreated(refs=tuple(daily), source="cli", comment="the 10,000-partition backfill"))
        w.add("want", big, WantBuilding())
        depmiss = [w.build("daily", (ref,), big, missing=(f"raw/{ref[6:]}",)) for ref in daily]
        w.add("want", big, WantUpstreamBuilding(waiting_on=tuple(daily[:20])))
        derived = w.want_id()
        raws = tuple(f"raw/{ref[6:]}" for ref in daily)
        w.add("want", derived, WantCreated(refs=raws, source=f"job_run:{depmiss[0]}", parent_want_ids=(big,),
                                           root_want_id=big, comment="derived"))
        w.add("want", derived, WantBuilding())
        for ref in raws:
            w.build("ingest", (ref,), derived)
        w.add("want", derived, WantSucceeded())
        w.add("want", big, WantIdle(reason="upstream partitions are live"))
        w.add("want", big, WantBuilding())
        for ref in daily:
            w.add("partition", ref, PartitionMissing(reason="upstream partitions are live"))
            w.build("daily", (ref,), big)
        w.add("want", big, WantSucceeded())
        hourly = [f"hourly/{i:06d}" for i in range(HOURLY_WANTS * HOURLY_PER_WANT)]
        rounds = 0
        while w.count < n_events:
            for group in chunks(hourly, HOURLY_PER_WANT):
                if w.count >= n_events:
                    break
                want = w.want_id()
                w.add("want", want, WantCreated(refs=group, source="api", comment=f"hourly round {rounds}"))
                w.add("want", want, WantBuilding())
                for n, batch in enumerate(chunks(list(group), BATCH)):
                    if w.count >= n_events:  # the log ends in the middle of a backfill: this want stays active
                        break
                    if rounds:
                        for ref in batch:
                            w.add("partition", ref, PartitionTainted(reason=f"rebuild round {rounds}"))
                    retry_of = w.fail("hourly", batch, want) if n % 37 == 5 else None
                    w.build("hourly", batch, want, retry_of=retry_of)
                else:
                    w.add("want", want, WantSucceeded())
            rounds += 1
    finally:
        log.close()
    return w.count, len(daily) * 2 + len(hourly)


def read_line(proc: subprocess.Popen[str], want: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline()
            if want in line:
                return line.strip()
            if not line:
                break
    raise SystemExit(f"the server printed no {want!r}")


def server_ms(r: httpx.Response) -> float:
    m = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
    assert m is not None, r.headers
    return float(m.group(1))


def vm(pid: int, key: str) -> float:
    """A /proc/PID/status memory figure, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(client: httpx.Client, url: str, repeat: int) -> tuple[float, float]:
    """Median server time and median wall time (ms) of ``repeat`` GETs of ``url`` (after one warm-up)."""
    first = client.get(url)
    assert first.status_code == 200, (url, first.status_code, first.text[:300])
    server, wall = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url)
        wall.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
        server.append(server_ms(r))
    return statistics.median(server), statistics.median(wall)


async def replay_ms(path: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        async with EventLog.open(path, writer=False) as log:
            t0 = time.perf_counter()
            await rebuild(log)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--keep", type=Path, help="write the log here and reuse it if it exists (saves the set-up)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = a.keep or Path(tmp) / "web.db"
        if not path.exists():
            t0 = time.perf_counter()
            n, parts = write_log(path, a.events)
            print(f"wrote {n:,} events ({parts:,} partitions) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        baseline = asyncio.run(replay_ms(path, 3))
        print(f"baseline: rebuilding the World from the log takes {baseline:,.0f} ms", file=sys.stderr)

        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "wantbuild", "ui", "--db", str(path), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            url = read_line(proc, "http://", 60)
            listening = time.perf_counter() - t0
            with httpx.Client(base_url=url, timeout=60) as client:
                while client.get("/").status_code != 200:
                    time.sleep(0.02)
                first_page = time.perf_counter() - t0
                health = client.get("/api/health").json()
                events = health["last_seq"]
                print(f"listening after {listening:.2f} s, first page after {first_page:.2f} s ({events:,} events; "
                      f"the server replayed them in {health['load_seconds']['replay']:.2f} s and indexed the World "
                      f"in {health['load_seconds']['index']:.2f} s)", file=sys.stderr)
                pages = {
                    "overview": "/",
                    "want_10k": f"/wants/{BIG}",
                    "events_page": "/events",
                    "api_status": "/api/status",
                    "api_want_10k": f"/api/wants/{BIG}",
                    "api_events": "/api/events",
                    "want_10k_filtered": f"/wants/{BIG}?pq=daily/09&pstatus=Live",
                    "events_filtered": "/events?type=JobRunDepMiss",
                    "partitions_search": "/partitions?q=hourly/0799",
                    "partition": "/partitions/daily/05000",
                    "runs_page": "/runs",
                }
                got: dict[str, tuple[float, float]] = {}
                for name, page_url in pages.items():
                    got[name] = measure(client, page_url, a.repeat)
                    print(f"  {name:<18} {page_url:<36} server {got[name][0]:7.1f} ms   wall {got[name][1]:7.1f} ms",
                          file=sys.stderr)
            rss = vm(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"events={events} first_page_s={first_page:.2f} overview_ms={got['overview'][0]:.1f} "
          f"want_10k_ms={got['want_10k'][0]:.1f} events_page_ms={got['events_page'][0]:.1f} rss_mb={rss:.0f} "
          f"baseline_replay_ms={baseline:.0f}")


if __name__ == "__main__":
    main()
