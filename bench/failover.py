"""Failover time on a PostgreSQL log: from the serving runtime's death to the standby's first committed event.

Set-up: a log of ``--events`` events (100,000: a backfill of ``events / 5`` partitions, built once), a graph of
in-process jobs, and real ``wantbuild run graph.toml --db URL --serve`` processes. Each trial starts a serving
runtime A, gives it ``--runs`` runs that are in flight (jobs that sleep), and then:

- ``kill``: a standby B (started beside A, caught up and idle) is waiting; A is SIGKILLed. Its database session
  ends with it, so B may take the lease at once, without waiting for it to lapse;
- ``stall``: the same, but A is SIGSTOPped: its session stays open (as for a machine that vanished without closing
  its TCP connections, or a process frozen by a GC pause or a VM migration), so B must wait for A's lease to
  lapse: this is the lease TTL's case;
- ``cold`` (the baseline): no standby; A is SIGKILLed and a new ``run --serve`` is started at once, as a
  process supervisor (systemd ``Restart=always``) would: the time includes its start-up and its replay of the log.

The time measured is from the signal to the moment the lease row shows a batch committed under the new epoch
(the row every batch stamps with its last seq, polled every 2 ms on a separate connection): the new runtime has
replayed the log, marked A's runs Lost, and committed that. Target (issue 12): ``kill`` and ``stall`` at most the
lease TTL + 2 s with the default TTL.

Run: ``python bench/failover.py`` (a throwaway server from Debian's binaries, or ``--url postgresql://...``).
The last line is ``events=... lease_ttl=... kill_s=... stall_s=... cold_s=... target_s=...`` (medians over
``--repeat``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _pg import drop_schema, schema_url, server

from eventlog._postgres import DEFAULT_LEASE_TTL
from eventlog._target import PgTarget

JOBS = """\
import anyio


async def fast(ctx):
    pass


async def slow(ctx):
    await anyio.sleep(3600)
"""

GRAPH = """\
[job.part]
outputs = "part/{n}"
params = { n = "int" }
function = "failover_jobs:fast"

[job.slow]
outputs = "slow/{n}"
function = "failover_jobs:slow"
"""

CLI = [sys.executable, "-m", "wantbuild"]


class Bench:
    def __init__(self, url: str, where: Path) -> None:
        self.url = url
        self.where = where
        self.schema = '"' + PgTarget(url).schema + '"'
        self.env = {**os.environ, "PYTHONPATH": str(where)}
        self.trial = 0

    def cli(self, *args: str) -> str:
        done = subprocess.run([*CLI, *args], cwd=self.where, env=self.env, capture_output=True, text=True,
                              check=False, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"wantbuild {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
        return done.stdout

    def serve(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        err = self.where / f"{name}.err"
        with open(err, "wb") as e:
            proc = subprocess.Popen([*CLI, "run", "graph.toml", "--db", self.url, "--serve"], cwd=self.where,
                                    env=self.env, stdout=subprocess.DEVNULL, stderr=e)
        return proc, err

    async def lease(self, conn: Any) -> tuple[int, int, bool]:
        """(epoch, last_seq, holder alive) of the log's writer lease."""
        from eventlog._pg_schema import LEASE_STATE

        row = await conn.fetchrow(LEASE_STATE.format(s=self.schema))
        return int(row[1]), int(row[3]), bool(row[5]) and float(row[2]) > 0

    async def count(self, conn: Any, type_name: str, after: int) -> int:
        return int(await conn.fetchval(
            f"SELECT count(*) FROM {self.schema}.events e JOIN {self.schema}.event_types t USING (type_key) "
            "WHERE t.name = $1 AND e.seq > $2", type_name, after))

    async def run(self, mode: str, runs: int) -> float:
        """One trial (see the module docstring); the seconds from the signal to the new epoch's first commit."""
        self.trial += 1
        conn = await asyncpg.connect(PgTarget(self.url).dsn)
        started: list[subprocess.Popen[bytes]] = []
        try:
            epoch0, _, _ = await self.lease(conn)
            a, _ = self.serve(f"a{self.trial}")
            started.append(a)
            await until(lambda: self.holds(conn, epoch0), "A to take the lease", a)
            if mode != "cold":
                b, b_err = self.serve(f"b{self.trial}")
                started.append(b)
                await until(lambda: _text(b_err, "Standby:"), "B to stand by", b)
                await idle(b.pid)  # caught up with the log: a standby that has been waiting a while
            _, before, _ = await self.lease(conn)
            refs = [f"slow/{self.trial * 1000 + i}" for i in range(runs)]
            self.cli("want", "create", *refs, "--db", self.url)
            await until(lambda: self.started_runs(conn, before, runs), "A's runs to start", a)
            epoch_a, seq_a, _ = await self.lease(conn)
            t0 = time.monotonic()
            a.send_signal(signal.SIGSTOP if mode == "stall" else signal.SIGKILL)
            if mode == "cold":
                c, _ = self.serve(f"c{self.trial}")
                started.append(c)
            while True:
                epoch, seq, _ = await self.lease(conn)
                if epoch != epoch_a and seq > seq_a:
                    return time.monotonic() - t0
                if time.monotonic() - t0 > 120:
                    raise SystemExit(f"{mode}: no new runtime committed within 120 s")
                await asyncio.sleep(0.002)
        finally:
            await conn.close()
            for p in started:
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
            for p in started:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    async def holds(self, conn: Any, epoch0: int) -> bool:
        epoch, _, alive = await self.lease(conn)
        return epoch > epoch0 and alive

    async def started_runs(self, conn: Any, after: int, n: int) -> bool:
        return await self.count(conn, "JobRunStarted", after) >= n


async def until(check: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if proc.poll() is not None:
            raise SystemExit(f"waiting for {what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _text(path: Path, needle: str) -> bool:
    return path.exists() and needle in path.read_text()  # noqa: ASYNC240 - a small file, polled


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def idle(pid: int) -> None:
    """Wait until process ``pid`` has used (almost) no CPU for half a second."""
    last = _cpu_ticks(pid)
    while True:
        await asyncio.sleep(0.5)
        now = _cpu_ticks(pid)
        if now - last <= 2:
            return
        last = now


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a PostgreSQL server (default: a throwaway one)")
    ap.add_argument("--events", type=int, default=100_000, help="events in the log before the trials")
    ap.add_argument("--runs", type=int, default=4, help="runs in flight when the serving runtime dies")
    ap.add_argument("--lease-ttl", type=float, default=None, help="lease TTL in seconds (default: the default)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--modes", default="kill,stall,cold")
    args = ap.parse_args()
    ttl = args.lease_ttl if args.lease_ttl is not None else DEFAULT_LEASE_TTL
    with server(args.url) as base, tempfile.TemporaryDirectory(prefix="wantbuild-failover-") as tmp:
        where = Path(tmp)
        (where / "failover_jobs.py").write_text(JOBS)
        (where / "graph.toml").write_text(GRAPH)
        await drop_schema(base, "bench_failover")
        url = schema_url(base, "bench_failover")
        if args.lease_ttl is not None:
            url += f"&lease_ttl={args.lease_ttl:g}"
        bench = Bench(url, where)
        t = time.perf_counter()
        bench.cli("want", "create", f"part/1..{max(1, args.events // 5)}", "--db", url, "--graph", "graph.toml")
        conn = await asyncpg.connect(PgTarget(url).dsn)
        events = int(await conn.fetchval(f"SELECT max(seq) FROM {bench.schema}.events"))
        await conn.close()
        print(f"log of {events} events built in {time.perf_counter() - t:.1f} s", flush=True)
        modes = [m for m in args.modes.split(",") if m]
        results: dict[str, list[float]] = {m: [] for m in modes}
        for i in range(args.repeat):
            for m in modes:
                s = await bench.run(m, args.runs)
                results[m].append(s)
                print(f"repeat {i + 1} {m}: {s:.2f} s from the signal to the new runtime's first commit", flush=True)
        await drop_schema(base, "bench_failover")
    figures = " ".join(f"{m}_s={statistics.median(v):.2f}" for m, v in results.items())
    print(f"events={events} lease_ttl={ttl:g} {figures} target_s={ttl + 2:g}")


if __name__ == "__main__":
    asyncio.run(main())
