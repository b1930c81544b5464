"""Standby runtimes on a PostgreSQL log, as real processes: ``run --serve`` twice, one serves and one waits; the
serving one is SIGKILLed, SIGSTOPped past its lease, or cut off from the database, and the standby takes over,
marks its runs Lost, fences its jobs and finishes the work, with every partition built once and never by two
processes at once. Also the embedding form, ``wantbuild.open(..., standby=True)``, on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from eventlog_helpers import pg_connect
from runtime_graphs import chain_graph

import wantbuild
from eventlog import open_log

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "wantbuild"]

# A command job that records each build in a shared file: "start REF PID" when it begins and "done REF PID" when
# it has built REF. Refs from WB_HOLD on (in sort order) wait while the file WB_GATE exists, so a test can kill
# a runtime while a known set of builds is in flight and none is between its "done" and its commit.
BUILD = '''\
import os, sys, time
from pathlib import Path

builds = Path(os.environ["WB_BUILDS"])
gate = Path(os.environ["WB_GATE"])
hold = os.environ.get("WB_HOLD", "~")


def note(line):
    with open(builds, "a") as f:
        f.write(line + "\\n")


for ref in sys.argv[1:]:
    note(f"start {ref} {os.getpid()}")
while gate.exists() and min(sys.argv[1:]) >= hold:
    time.sleep(0.02)
time.sleep(0.05)
for ref in sys.argv[1:]:
    note(f"done {ref} {os.getpid()}")
'''

GRAPH = '''\
[job.daily]
outputs = "daily/{{date}}"
params = {{ date = "date" }}
command = ["{python}", "build.py"]
concurrency = 2
'''

DAYS = [f"daily/2026-01-{d:02d}" for d in range(1, 13)]
RANGE = "daily/2026-01-01..2026-01-12"
HOLD = "daily/2026-01-06"  # this one and later wait at the gate: 01-06 and 01-07 are in flight at the kill


@dataclass
class Runtime:
    """A ``wantbuild run --serve`` process and the files its output goes to."""

    proc: subprocess.Popen[bytes]
    err: Path

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Setup:
    url: str
    where: Path
    builds: Path
    gate: Path
    env: dict[str, str]
    started: list[Runtime]

    def serve(self, name: str) -> Runtime:
        err = self.where / f"{name}.err"
        with open(self.where / f"{name}.out", "wb") as out, open(err, "wb") as e:
            proc = subprocess.Popen([*CLI, "run", "graph.toml", "--db", self.url, "--serve"], cwd=self.where,
                                    stdout=out, stderr=e, env=self.env)
        rt = Runtime(proc, err)
        self.started.append(rt)
        return rt

    def wb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=self.where, env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)

    def lines(self) -> list[list[str]]:
        return [ln.split() for ln in self.builds.read_text().splitlines()] if self.builds.exists() else []

    def started_refs(self) -> set[str]:
        return {ref for what, ref, _ in self.lines() if what == "start"}

    def done_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for what, ref, _ in self.lines():
            if what == "done":
                counts[ref] = counts.get(ref, 0) + 1
        return counts


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def live_count(url: str) -> int:
    async def main() -> int:
        async with open_log(url, writer=False) as log:
            world = await wantbuild.rebuild(log)
        return sum(1 for p in world.partitions.values() if p.status == "Live")

    return anyio.run(main)


def run_events(url: str) -> dict[str, list[str]]:
    """Each job run's event types, in log order."""

    async def main() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        async with open_log(url, writer=False) as log:
            async for rec in log.read(kinds=["job_run"]):
                out.setdefault(rec.entity_id, []).append(rec.type)
        return out

    return anyio.run(main)


@pytest.fixture
def setup(tmp_path: Path, pg_url: str) -> Iterator[Setup]:
    """A graph of one command job (daily/{date}, two runs at once) on a fresh log; the runtimes it starts are
    stopped at the end."""
    (tmp_path / "build.py").write_text(BUILD)
    (tmp_path / "graph.toml").write_text(GRAPH.format(python=sys.executable))
    gate = tmp_path / "gate"
    gate.touch()
    env = {**os.environ, "WB_BUILDS": str(tmp_path / "builds.txt"), "WB_GATE": str(gate), "WB_HOLD": HOLD}
    s = Setup(pg_url, tmp_path, tmp_path / "builds.txt", gate, env, [])
    try:
        yield s
    finally:
        for rt in s.started:
            rt.stop()


def serving_and_standby(s: Setup, url: str | None = None) -> tuple[Runtime, Runtime]:
    """A serves the log, B stands by (and says so); a backfill is submitted and held at the gate with two builds
    in flight, everything before them committed."""
    if url is not None:
        s.url = url
    a = s.serve("a")
    wait_until(lambda: "Serving" in a.stderr() or a.proc.poll() is not None, "A to serve")
    b = s.serve("b")
    wait_until(lambda: "Standby:" in b.stderr() or b.proc.poll() is not None, "B to stand by")
    assert b.proc.poll() is None, b.stderr()
    assert "Serving" not in b.stderr()
    created = s.wb("want", "create", RANGE, "--db", s.url)
    assert created.returncode == 0, created.stderr
    held = {HOLD, "daily/2026-01-07"}
    wait_until(lambda: held <= s.started_refs() and live_count(s.url) == 5, "two builds held at the gate")
    assert s.done_counts() == {ref: 1 for ref in DAYS[:5]}
    return a, b


def never_at_once(lines: list[list[str]]) -> None:
    """No partition was built by two processes at once: while a build of a ref runs (from its "start" to its
    "done"), no other build of that ref starts. (A killed build writes no "done"; the fencing tests cover those.)"""
    starts: dict[tuple[str, str], int] = {}
    for i, (what, ref, pid) in enumerate(lines):
        if what == "start":
            starts[(ref, pid)] = i
    for i, (what, ref, pid) in enumerate(lines):
        if what != "done":
            continue
        began = starts[(ref, pid)]
        others = [p for (r, p), j in starts.items() if r == ref and p != pid and began < j < i]
        assert not others, f"{ref}: pid(s) {others} started building it while pid {pid} did"


def check_finished(s: Setup, b: Runtime) -> None:
    """B built the rest: every partition built exactly once, the log verifies (I1-I6), B stops cleanly."""
    wait_until(lambda: live_count(s.url) == len(DAYS), "the standby to finish the backfill")
    assert s.done_counts() == {ref: 1 for ref in DAYS}
    never_at_once(s.lines())
    starts = [ref for what, ref, _ in s.lines() if what == "start"]
    assert sorted(r for r in set(starts) if starts.count(r) > 1) == [HOLD, "daily/2026-01-07"]
    lost = [rid for rid, types in run_events(s.url).items() if types[-1] == "JobRunLost"]
    assert len(lost) == 2
    verify = s.wb("replay", s.url, "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert b.stop() == 0, b.stderr()


def test_sigkill_mid_backfill_the_standby_takes_over_and_builds_each_partition_once(setup: Setup) -> None:
    """SIGKILL the serving runtime mid-backfill: the standby takes the lease, marks its two runs Lost, rebuilds
    their partitions and finishes; every partition is built exactly once (the killed builds never finished)."""
    a, b = serving_and_standby(setup)
    a.proc.kill()
    a.proc.wait()
    # B says it took over, then what it recovered (line by line: wait for the line, not just the first one)
    wait_until(lambda: "lost runs (in flight when the runtime died, marked Lost): 2" in b.stderr(), "B to take over")
    assert "Took over" in b.stderr()
    setup.gate.unlink()
    check_finished(setup, b)


def test_a_leader_stopped_past_its_lease_is_fenced_and_exits_when_it_resumes(setup: Setup) -> None:
    """SIGSTOP the serving runtime past its lease: the standby takes over and stops its jobs (fencing); on SIGCONT
    the old one's next write is refused, it stops and exits non-zero saying why; none of its writes landed."""
    a, b = serving_and_standby(setup, setup.url + "&lease_ttl=3")
    held_pids = {int(pid) for what, ref, pid in setup.lines() if what == "start" and ref >= HOLD}
    a.proc.send_signal(signal.SIGSTOP)
    wait_until(lambda: "fenced: " in b.stderr(), "B to take over and fence A's jobs")
    assert "Took over" in b.stderr()
    # A's jobs were stopped by B (zombies until A reaps them)
    wait_until(lambda: all(_gone(pid) for pid in held_pids), f"jobs {held_pids} to be fenced", timeout=10)
    setup.gate.unlink()
    wait_until(lambda: live_count(setup.url) == len(DAYS), "the standby to finish the backfill")
    a.proc.send_signal(signal.SIGCONT)
    assert a.proc.wait(30) != 0
    assert "lost its writer lease" in a.stderr()
    assert "Traceback" not in a.stderr()
    check_finished(setup, b)


def test_a_leader_cut_off_from_the_database_yields_or_keeps_the_log(setup: Setup) -> None:
    """Kill every connection of the serving runtime (pg_terminate_backend): it reconnects and carries on, or the
    standby takes the lease and the old one stops; either way one runtime finishes and each partition is built
    once."""
    a, b = serving_and_standby(setup)
    cut_off(setup.url, a.proc.pid)
    setup.gate.unlink()
    wait_until(lambda: live_count(setup.url) == len(DAYS), "the backfill to finish")
    never_at_once(setup.lines())
    if "Took over" in b.stderr():
        # A's two held jobs may have finished (the gate opened) before B fenced them: then B built them again,
        # after them; nothing else twice.
        assert {r: n for r, n in setup.done_counts().items() if n != 1}.keys() <= {HOLD, "daily/2026-01-07"}
        assert a.proc.wait(30) != 0
        assert "lost its writer lease" in a.stderr()
        assert b.stop() == 0
    else:
        assert setup.done_counts() == {ref: 1 for ref in DAYS}
        assert a.proc.poll() is None
        assert a.stop() == 0
    verify = setup.wb("replay", setup.url, "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_vanished_leader_is_replaced_without_waiting_for_its_lease(setup: Setup) -> None:
    """A machine that vanished (SIGSTOP, then its database sessions killed): the standby takes over at once, not
    after the lease (default TTL 10 s) lapses; when the old one comes back, its reconnection finds the lease gone
    and it exits non-zero."""
    a, b = serving_and_standby(setup)
    a.proc.send_signal(signal.SIGSTOP)
    cut_at = time.monotonic()
    cut_off(setup.url, a.proc.pid)
    wait_until(lambda: "Took over" in b.stderr(), "B to take over")
    assert time.monotonic() - cut_at < 5.0
    setup.gate.unlink()
    wait_until(lambda: live_count(setup.url) == len(DAYS), "the standby to finish the backfill")
    a.proc.send_signal(signal.SIGCONT)
    assert a.proc.wait(30) != 0
    assert "lost its writer lease" in a.stderr()
    check_finished(setup, b)


def cut_off(url: str, pid: int) -> None:
    """Terminate every database session of process ``pid``."""
    ports = client_ports(pid)
    assert ports

    async def cut() -> None:
        conn = await pg_connect(url)
        try:
            killed = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1::int[]) "
                                         "AND pg_terminate_backend(pid)", sorted(ports))
        finally:
            await conn.close()
        assert killed >= 2  # its writer and its reader pool at least

    anyio.run(cut)


def client_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections process ``pid`` holds (its database connections)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


async def test_open_with_standby_waits_replays_and_takes_over(log_target: str, tmp_path: Path) -> None:
    """``wantbuild.open(target, graph, standby=True)`` while another runtime serves: it waits (following the
    log), enters once the other closes, with the World the log holds, and carries on writing."""
    graph, built = chain_graph()
    entered = anyio.Event()
    seen: dict[str, object] = {}

    async def standby() -> None:
        async with wantbuild.open(log_target, graph, standby=True, log_dir=tmp_path / "b") as b:
            entered.set()
            seen["live"] = sorted(p.ref for p in b.partitions("Live"))
            seen["replayed"] = b.recovery.events_replayed
            await (await b.want("daily/3")).done(timeout=20)
            async with open_log(log_target, writer=False) as reader:
                assert await wantbuild.rebuild(reader) == b.world

    async with anyio.create_task_group() as tg:
        async with wantbuild.open(log_target, graph, log_dir=tmp_path / "a") as a:
            await (await a.want("daily/1")).done(timeout=20)
            tg.start_soon(standby)
            await anyio.sleep(0.5)
            assert not entered.is_set()
            await (await a.want("daily/2")).done(timeout=20)
            last = a.log.last_seq
        with anyio.fail_after(20):
            await entered.wait()
    assert seen["live"] == ["daily/1", "daily/2", "raw/1", "raw/2"]
    assert seen["replayed"] == last
    assert built["daily/3"] == 1
