"""Issue #10 (fault safety), reproduced from the outside: one regression test per numbered item.

Each test drives the real thing (the ``wantbuild`` CLI in subprocesses, or an embedded runtime through the public
API), provokes the fault the issue describes, and asserts the behaviour the issue's "What to build" asks for.
Where the issue leaves the exact form open (message wording, exit code) the test asserts the essence: a non-zero
exit, a message that names the problem, nothing written, nothing left running.

These tests were written before the fixes, so each failed when it was committed; they are not marked xfail on
purpose. Processes they start are stopped by them (job processes by the pid each job writes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import need
from test_cli import JOBS as CLI_JOBS

import wantbuild

CLI = [sys.executable, "-m", "wantbuild"]
JOBS_DIR = Path(__file__).parent / "jobs"
TERMINAL = {"Successful", "Failed", "UpstreamFailed", "Canceled", "Expired"}

JOBS = CLI_JOBS + '''

async def loops(ctx):
    """Reports its input missing every time, even once it is Live."""
    raise MissingDeps([f"raw/{p['i']}" for p in ctx.params])
'''
"""The function jobs of the CLI tests (raw/{i}, slow with WB_TEST_SLOW; daily/{i} needs raw/{i}), and loops/{i}."""

GRAPH = '''\
[job.raw]
outputs = "raw/{{i}}"
function = "{module}:raw"

[job.daily]
outputs = "daily/{{i}}"
function = "{module}:daily"

[job.loops]
outputs = "loops/{{i}}"
function = "{module}:loops"
retries = 2
backoff = 0.05

[job.sleeper]
outputs = "sleep/{{i}}"
command = ["python3", {sleeper}, "--dir", {pids}]

[job.stubborn]
outputs = "stubborn/{{i}}"
command = ["python3", {sleeper}, "--dir", {pids}, "--ignore-term"]
'''

KILLER = '''\
"""Serve the log with an embedded runtime that SIGKILLs itself right after committing an event of one type."""
import os
import signal
import sys

import anyio
import structlog

import wantbuild

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # stdout is for the want id


async def main(db, graph_file, event_type, refs):
    async with wantbuild.open(db, wantbuild.load_graph(graph_file)) as rt:
        def hook(rec, old, new):
            if rec.event.event_name == event_type:
                os.kill(os.getpid(), signal.SIGKILL)

        rt.add_hook(hook)
        if refs:
            print((await rt.want(refs)).want_id, flush=True)
        print("serving", flush=True)
        await anyio.sleep(60)


anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
'''


# -- helpers ------------------------------------------------------------------------------------------------


def wb(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, "NO_COLOR": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def events(db: Path, *args: str) -> list[dict[str, Any]]:
    p = wb("events", "--db", db, "--json", *args, cwd=db.parent)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def replay(db: Path) -> dict[str, Any]:
    p = wb("replay", db, "--json", cwd=db.parent)
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def wants(db: Path) -> dict[str, dict[str, Any]]:
    p = wb("want", "list", "--db", db, "--json", cwd=db.parent)
    assert p.returncode == 0, p.stderr
    return {w["want_id"]: w for w in json.loads(p.stdout)}


def commands(db: Path) -> list[dict[str, Any]]:
    """The command inbox, read with plain SQLite (read-only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, name, payload, completed_at, result FROM commands ORDER BY id").fetchall()
    finally:
        con.close()
    return [{"id": i, "name": n, "payload": json.loads(p), "done": c is not None,
             "result": json.loads(r) if r else None} for i, n, p, c, r in rows]


class Project:
    """A folder with a graph file of function and command jobs, and the log ``wb.db`` in it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "wb.db"
        self.pids = folder / "pids"
        self.module = f"wbfault_{uuid.uuid4().hex[:10]}"
        (folder / f"{self.module}.py").write_text(JOBS)
        self.graph = folder / "graph.toml"
        self.graph.write_text(GRAPH.format(module=self.module, sleeper=json.dumps(str(JOBS_DIR / "sleeper.py")),
                                           pids=json.dumps(str(self.pids))))
        self.started: list[subprocess.Popen[str]] = []

    def wb(self, *args: str | Path, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return wb(*args, cwd=self.folder, env=env, timeout=timeout)

    def build(self, *refs: str) -> None:
        """``wantbuild run`` the refs to Live (a log to work on)."""
        args = [a for ref in refs for a in ("--want", ref)]
        p = self.wb("run", self.graph, "--db", self.db, *args)
        assert p.returncode == 0, p.stderr

    def serve(self, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``wantbuild run GRAPH --db wb.db --serve``, once it serves (its stderr goes to a file)."""
        err = self.folder / f"serve-{len(self.started)}.stderr"
        with open(err, "w") as f:
            proc = subprocess.Popen([*CLI, "run", str(self.graph), "--db", str(self.db), "--serve"], cwd=self.folder,
                                    env={**os.environ, "NO_COLOR": "1", **(env or {})}, stdout=subprocess.DEVNULL,
                                    stderr=f, text=True)
        self.started.append(proc)
        wait_for(lambda: "Serving " in err.read_text() or proc.poll() is not None, "the runtime to serve", 30)
        assert proc.poll() is None, f"the runtime exited {proc.returncode}: {err.read_text()}"
        return proc

    def job_pid(self, timeout: float = 20) -> int:
        """The pid of the first command job that started (it writes its pid file)."""
        def first() -> int | None:
            files = sorted(self.pids.glob("*.pid")) if self.pids.exists() else []
            return int(files[0].read_text()) if files else None

        pid: int = wait_for(first, "a job process to start", timeout)
        return pid

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in self.pids.glob("*.pid") if self.pids.exists() else []:
            pid = int(f.read_text())
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    ours = b"sleeper.py" in c.read()
                if ours:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


# -- 1. a fault inside the runtime strands work forever -----------------------------------------------------


async def test_a_failing_user_hook_is_logged_never_fatal(tmp_path: Path) -> None:
    """Item 1: a user hook that raises is logged, never fatal: wants on a concurrency=1 job all succeed."""
    graph = wantbuild.Graph("hooks")

    @graph.job("one", outputs="one/{i}", concurrency=1)
    async def one(ctx: wantbuild.JobContext) -> None:
        pass

    def hook(rec: Any, old: Any, new: Any) -> None:
        raise ValueError("a bug in the user's hook")

    async with wantbuild.open(tmp_path / "wb.db", graph, shutdown_grace=2.0) as rt:
        rt.add_hook(hook)
        statuses = []
        with anyio.move_on_after(15):
            for i in range(3):
                statuses.append((await (await rt.want(f"one/{i}")).done()).status)
        assert statuses == ["Successful"] * 3, (
            f"wants on a concurrency=1 job with a raising hook: {statuses} after 15 s (want 3 Successful); "
            f"actor failures: {rt.failures}")
        assert rt.failures == [], f"a raising user hook crashed actors: {rt.failures}"


def test_a_commit_failure_does_not_strand_a_want(project: Project) -> None:
    """Item 1: a commit that fails (another process holds SQLite's write lock past the busy timeout) while a
    run ends does not strand its want: once the lock is gone the want still reaches a terminal state."""
    rt = project.serve(env={"WB_TEST_SLOW": "1.0"})
    created = project.wb("want", "create", "raw/1", "--db", project.db, "--json")
    assert created.returncode == 0, created.stderr
    want_id = json.loads(created.stdout)["want_id"]
    holder = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
         "con.execute('BEGIN IMMEDIATE')\n"
         "time.sleep(7)\n"
         "con.execute('ROLLBACK')\n", str(project.db)],
        capture_output=True, text=True, timeout=60, check=False)
    assert holder.returncode == 0, holder.stderr
    assert rt.poll() is None, "the runtime died of a failed commit"

    def ended() -> bool:
        return wants(project.db)[want_id]["status"] in TERMINAL

    try:
        wait_for(ended, f"want {want_id} to end after its run's commit failed", 15)
    except AssertionError:
        state = replay(project.db)
        raise AssertionError(f"want {want_id} stranded after a failed commit: wants {state['active_wants']}, "
                             f"runs in flight {state['in_flight_runs']}") from None


# -- 2. jobs outlive a crashed runtime ----------------------------------------------------------------------


def test_a_job_dies_with_its_killed_runtime(project: Project) -> None:
    """Item 2: a command job does not outlive a runtime killed with SIGKILL (PR_SET_PDEATHSIG on Linux)."""
    rt = project.serve()
    assert project.wb("want", "create", "sleep/1", "--db", project.db).returncode == 0
    pid = project.job_pid()
    rt.kill()
    rt.wait()
    try:
        wait_for(lambda: not alive(pid), "the job to die with its runtime", 5)
    except AssertionError:
        raise AssertionError(f"job process {pid} still runs 5 s after its runtime was SIGKILLed") from None


def test_a_restart_fences_the_jobs_of_the_killed_runtime(project: Project) -> None:
    """Item 2: before a restarted runtime serves (and leases again), the previous runtime's surviving job
    (one that ignores SIGTERM) is gone."""
    rt = project.serve()
    assert project.wb("want", "create", "stubborn/1", "--db", project.db).returncode == 0
    pid = project.job_pid()
    rt.kill()
    rt.wait()
    project.serve()
    assert not alive(pid), f"job {pid} of the killed runtime still runs after the restarted runtime serves"


def _processes_with(needle: bytes) -> list[int]:
    """Live processes whose argv contains ``needle``."""
    with os.scandir("/proc") as entries:
        pids = [int(e.name) for e in entries if e.name.isdigit()]
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read() and alive(pid):
                    found.append(pid)
        except OSError:
            pass
    return found


def _run_of(pid: int, path: bytes) -> str | None:
    """The ``WANTBUILD_JOB_RUN_ID`` in the environment of process ``pid``, if its ``PATH`` holds ``path`` (the
    test's own jobs: other test runs on the machine number their runs the same way)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.partition(b"=")[::2] for kv in f.read().split(b"\0") if kv)
    except OSError:
        return None
    if path not in env.get(b"PATH", b"").split(os.pathsep.encode()):
        return None
    run = env.get(b"WANTBUILD_JOB_RUN_ID")
    return run.decode() if run is not None else None


def test_a_job_forked_before_its_death_signal_was_armed_is_fenced(project: Project) -> None:
    """Item 2: a job forked just before its runtime was SIGKILLed, before its death signal was armed, is stopped
    by the restarted runtime (from the process identity in the log), not left running.

    ``setpriv`` arms ``PR_SET_PDEATHSIG`` after the fork: a runtime that dies in between leaves a job the kernel
    will not kill. A ``setpriv`` on PATH that takes 0.5 s to start (a slow machine) widens that window so the
    test hits it every time. (The crash drill also found the narrower window where the identity was not yet in
    the log either; that one is not reproduced here.)"""
    if shutil.which("setpriv") is None:
        need("setpriv (util-linux)", "apt-get install util-linux")
    slow = project.folder / "slowbin"
    slow.mkdir()
    (slow / "setpriv").write_text(f'#!/bin/sh\nsleep 0.5\nexec {shutil.which("setpriv")} "$@"\n')
    (slow / "setpriv").chmod(0o755)
    env = {"PATH": f"{slow}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    rt = project.serve(env=env)
    assert project.wb("want", "create", "sleep/1", "--db", project.db).returncode == 0
    forked = wait_for(lambda: _processes_with(str(slow / "setpriv").encode()), "the runtime to fork the job", 30)
    assert any(_run_of(pid, bytes(slow)) for pid in forked)  # the filter below recognises this test's jobs
    rt.kill()  # forked, not started yet: the slow setpriv has not armed the death signal
    rt.wait()
    project.serve(env=env)
    wait_for(lambda: bool(events(project.db, "--type", "JobRunLost")), "the restart to mark the run Lost", 30)
    lost = {e["entity_id"] for e in events(project.db, "--type", "JobRunLost")}
    time.sleep(1.5)  # the slow setpriv has long finished: the job runs now, if it was let through
    left = {pid: run for pid in _processes_with(b"sleeper.py") if (run := _run_of(pid, bytes(slow))) in lost}
    assert not left, f"job process(es) of the killed runtime's Lost run still run after the restart: {left}"


def test_a_runs_process_identity_is_in_the_log(project: Project) -> None:
    """Item 2: the log records each run's process identity when it starts (its pid, at least)."""
    rt = project.serve()
    assert project.wb("want", "create", "sleep/1", "--db", project.db).returncode == 0
    pid = project.job_pid()
    run_id = next(project.pids.glob("*.pid")).stem

    def values(x: Any) -> Iterator[Any]:
        if isinstance(x, dict):
            for v in x.values():
                yield from values(v)
        elif isinstance(x, list):
            for v in x:
                yield from values(v)
        else:
            yield x

    def naming_pid() -> list[dict[str, Any]]:
        return [e for e in events(project.db, "--entity", run_id) if pid in values(e["payload"])]

    try:
        wait_for(naming_pid, f"an event of {run_id} naming its pid {pid}", 5)
    finally:
        rt.send_signal(signal.SIGTERM)
        rt.wait(30)


# -- 3. restart duplicates work -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [pytest.param(signal.SIGKILL, id="sigkill"), pytest.param(signal.SIGINT, id="ctrl-c")])
def test_a_restart_does_not_duplicate_derived_wants(project: Project, stop: signal.Signals) -> None:
    """Item 3: after a restart (crash or Ctrl-C), no second derived want is created for a ref already wanted."""
    slow = {"WB_TEST_SLOW": "30"}
    rt = project.serve(env=slow)
    assert project.wb("want", "create", "daily/1", "--db", project.db).returncode == 0

    def raw_building() -> bool:
        return any(e["type"] == "PartitionBuilding" and e["entity_id"] == "raw/1" for e in events(project.db))

    wait_for(raw_building, "raw/1 to be building")
    rt.send_signal(stop)
    rt.wait(30)
    rt = project.serve(env=slow)
    time.sleep(1.0)  # recovery has run before serving; give the supervisor a moment anyway
    rt.send_signal(signal.SIGTERM)
    rt.wait(30)
    derived = [e for e in events(project.db, "--type", "WantCreated") if "raw/1" in e["payload"]["refs"]]
    assert len(derived) == 1, (
        f"{len(derived)} wants created for raw/1 (one derived want expected): "
        + "; ".join(f"{e['entity_id']} from {e['payload']['source']} at seq {e['seq']}" for e in derived))


# -- 4. a job that reports a Live partition as missing loops forever ----------------------------------------


def test_a_live_dependency_reported_missing_fails_the_run(project: Project) -> None:
    """Item 4: a job that keeps reporting a Live partition as missing fails, with a reason naming it, after a
    bounded number of runs (its retry policy), instead of looping."""
    try:
        p = project.wb("run", project.graph, "--db", project.db, "--want", "loops/1", "--json", timeout=15)
    except subprocess.TimeoutExpired:
        p = None
    dep_miss = [e for e in events(project.db, "--type", "JobRunDepMiss")]
    assert p is not None, f"still running after 15 s: {len(dep_miss)} DepMiss runs so far, no end"
    assert len(dep_miss) <= 4, f"{len(dep_miss)} DepMiss runs (loops has retries = 2, so at most 1 + 3)"
    (want,) = [w for w in wants(project.db).values() if w["refs"] == ["loops/1"]]
    assert want["status"] == "Failed", want
    assert "raw/1" in want["reason"], f"the failure does not name the dependency: {want['reason']!r}"


# -- 5. signals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="sigint"), pytest.param(signal.SIGTERM, id="sigterm")])
@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_a_signal_during_startup_stops_cleanly(tmp_path: Path, sig: signal.Signals, delay: float) -> None:
    """Item 5: SIGINT/SIGTERM while ``demo`` starts (the log being opened) stops it cleanly: exit 130/143, no
    traceback, the demo not run to its end, no run left in flight."""
    db = tmp_path / "demo.db"
    proc = subprocess.Popen([*CLI, "demo", "--db", str(db), "--data", str(tmp_path / "data")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    try:
        wait_for(lambda: db.exists() or Path(f"{db}.lock").exists() or proc.poll() is not None,
                 "demo to open its log")
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    assert proc.returncode == expected, f"exit {proc.returncode} (want {expected}); stderr: {err[-1500:]}"
    assert "Traceback" not in err, err[-3000:]
    p = wb("replay", db, "--json", cwd=tmp_path)
    if p.returncode == 0:
        assert json.loads(p.stdout)["in_flight_runs"] == [], "runs left in flight: the shutdown was not clean"


def test_a_second_sigterm_during_shutdown_does_not_skip_cleanup(project: Project) -> None:
    """Item 5: a second SIGTERM while the runtime shuts down is reported, not fatal: its job (which ignores
    SIGTERM) is still killed and its run recorded, not left Running."""
    rt = project.serve()
    assert project.wb("want", "create", "stubborn/1", "--db", project.db).returncode == 0
    pid = project.job_pid()
    rt.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # shutting down: the job got SIGTERM, ignores it, the runtime waits its grace period
    rt.send_signal(signal.SIGTERM)
    rt.wait(30)
    left = alive(pid)
    in_flight = replay(project.db)["in_flight_runs"]
    assert rt.returncode >= 0, f"the second SIGTERM killed the runtime (exit {rt.returncode}); job {pid} " \
                               f"{'orphaned' if left else 'gone'}; runs left in flight: {in_flight}"
    assert not left, f"job {pid} orphaned"
    assert in_flight == [], f"runs left in flight: {in_flight}"


def test_the_outcome_printed_after_an_interrupt_is_read_after_shutdown(project: Project) -> None:
    """Item 5: the outcome ``run --json`` prints after Ctrl-C is the state after the shutdown (no run still
    Running in it), the same as the log's."""
    proc = subprocess.Popen([*CLI, "run", str(project.graph), "--db", str(project.db), "--want", "sleep/1",
                             "--want", "sleep/2", "--json"], cwd=project.folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    project.started.append(proc)
    wait_for(lambda: len(list(project.pids.glob("*.pid"))) >= 1 if project.pids.exists() else False,
             "a job to start")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    printed = json.loads(out)["runs"]
    logged = {k: v for k, v in replay(project.db)["counts"]["job_run"].items() if v}
    assert printed == logged, f"printed after the interrupt: {printed}; the log after shutdown: {logged}"


# -- 6. the command inbox -----------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["taint", "cancel"])
def test_a_redelivered_command_is_applied_once(project: Project, what: str) -> None:
    """Item 6: a cancel/taint whose effect committed just before the runtime died is not applied again when the
    next runtime redelivers it, and its command completes ok (effect and completion commit together)."""
    script = project.folder / "killer.py"
    script.write_text(KILLER)
    reason = f"drill {uuid.uuid4().hex[:8]}"
    env = {**os.environ, "NO_COLOR": "1", "WB_TEST_SLOW": "30"}
    if what == "taint":
        project.build("raw/1")
        queued = project.wb("taint", "raw/1", "--reason", reason, "--db", project.db, "--json")
        assert json.loads(queued.stdout)["via"] == "queued", queued.stderr
        killer = subprocess.run([sys.executable, str(script), str(project.db), str(project.graph),
                                 "PartitionTainted"], cwd=project.folder, env=env, capture_output=True, text=True,
                                timeout=60, check=False)
    else:
        proc = subprocess.Popen([sys.executable, str(script), str(project.db), str(project.graph), "WantCanceled",
                                 "raw/1"], cwd=project.folder, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        project.started.append(proc)
        assert proc.stdout is not None
        want_id = proc.stdout.readline().strip()
        assert want_id.startswith("w-"), proc.stderr.read() if proc.stderr else ""
        assert proc.stdout.readline().strip() == "serving"
        project.wb("want", "cancel", want_id, "--reason", reason, "--db", project.db, "--timeout", "5")
        out, err = proc.communicate(timeout=30)
        killer = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert killer.returncode == -signal.SIGKILL, f"the runtime did not die right after the effect: {killer.stderr}"
    finish = project.wb("run", project.graph, "--db", project.db, env={"WB_TEST_SLOW": "0"})
    assert finish.returncode == 0, finish.stderr
    effect = "PartitionTainted" if what == "taint" else "WantCanceled"
    applied = [e for e in events(project.db, "--type", effect) if e["payload"].get("reason") == reason]
    (cmd,) = [c for c in commands(project.db) if c["name"] == what]
    assert len(applied) == 1, f"{what} applied {len(applied)} times"
    assert cmd["done"], f"the {what} took effect, but its command was never completed"
    assert (cmd["result"] or {}).get("ok"), f"the {what} took effect once, but its command reports: {cmd['result']}"


def test_a_queued_want_rejected_later_is_visible(project: Project) -> None:
    """Item 6: a want queued with no runtime and rejected by the next one (no job produces its ref) is visible
    afterwards: ``wantbuild status`` names it."""
    project.build("raw/1")
    queued = project.wb("want", "create", "nope/1", "--db", project.db, "--json")
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["via"] == "queued"
    project.wb("run", project.graph, "--db", project.db)
    status = project.wb("status", "--db", project.db)
    assert status.returncode == 0, status.stderr
    assert "nope/1" in status.stdout + status.stderr, f"the rejected want is nowhere in `status`:\n{status.stdout}"


def test_want_create_wait_without_a_runtime_does_not_exit_0(project: Project) -> None:
    """Item 6: ``want create --wait`` with no runtime running never exits 0 after only queuing: it waits for one
    (up to --timeout) or fails with a message."""
    project.build("raw/1")
    p = project.wb("want", "create", "raw/2", "--db", project.db, "--wait", "--timeout", "2", timeout=60)
    assert p.returncode != 0, f"exit 0 though no runtime built the want: {p.stdout} {p.stderr}"
    assert p.stderr.strip(), "no message says why"


# -- 7. damaged and read-only logs --------------------------------------------------------------------------


def _sql(db: Path, *statements: str) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        for s in statements:
            con.execute(s)
    finally:
        con.close()


def _swap_last_two_seqs(db: Path) -> None:
    con = sqlite3.connect(db)
    try:
        a, b = (r[0] for r in con.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 2"))
    finally:
        con.close()
    _sql(db, f"UPDATE events SET seq = -1 WHERE seq = {a}", f"UPDATE events SET seq = {a} WHERE seq = {b}",
         f"UPDATE events SET seq = {b} WHERE seq = -1")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "last-event-deleted": lambda db: _sql(db, "DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)"),
    "middle-event-deleted": lambda db: _sql(db, "DELETE FROM events WHERE seq = (SELECT max(seq) / 2 FROM events)"),
    "seqs-swapped": _swap_last_two_seqs,
}


def _rows(db: Path) -> tuple[int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n, top = con.execute("SELECT count(*), max(seq) FROM events").fetchone()
    finally:
        con.close()
    return int(n), int(top)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_the_runtime_never_appends_to_a_damaged_log(project: Project, damage: str) -> None:
    """Item 7: a runtime refuses to open a log that ``replay --verify`` calls damaged, says what is wrong and what
    to do (verify, restore a backup), and writes nothing to it."""
    project.build("daily/1")
    DAMAGE[damage](project.db)
    verify = project.wb("replay", project.db, "--verify")
    assert verify.returncode == 1, f"precondition: --verify must see this damage: {verify.stdout}"
    before = _rows(project.db)
    run = project.wb("run", project.graph, "--db", project.db, "--want", "raw/2")
    after = _rows(project.db)
    assert run.returncode != 0, f"the runtime ran on a damaged log: {run.stdout[-500:]}"
    assert after == before, f"events were appended to a damaged log: (count, max seq) {before} -> {after}"
    msg = run.stderr.lower()
    assert "verify" in msg or "backup" in msg, f"the message does not say what to do: {run.stderr.strip()}"


PAYLOADS = {
    "not-this-event": ("JobRunSucceeded", b'{"not": "this event"}'),
    "unknown-field": ("PartitionLive", None),  # the real payload plus a field the event does not have
    "missing-field": ("PartitionLive", b"{}"),
}


@pytest.mark.parametrize("case", list(PAYLOADS))
def test_verify_rejects_a_payload_that_is_not_its_event(project: Project, case: str) -> None:
    """Item 7: ``replay --verify`` decodes strictly: a payload replaced by ``{"not": "this event"}``, one with an
    unknown field, or one missing a required field is an error naming its seq."""
    project.build("raw/1")
    event_type, payload = PAYLOADS[case]
    (target,) = [e for e in events(project.db, "--type", event_type)][:1]
    if payload is None:
        payload = json.dumps({**target["payload"], "bogus": 1}).encode()
    con = sqlite3.connect(project.db, isolation_level=None)
    try:
        con.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, target["seq"]))
    finally:
        con.close()
    verify = project.wb("replay", project.db, "--verify")
    assert verify.returncode == 1, f"--verify passed a {case} payload at seq {target['seq']}: {verify.stdout}"
    assert str(target["seq"]) in verify.stderr, verify.stderr


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Callable[[list[str]], list[str]]]:
    """Make ``folder`` read-only for the commands run through the yielded wrapper: a read-only bind mount in a
    private mount namespace when we are root (root ignores permission bits), else permission bits."""
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            need("unshare (util-linux)", "apt-get install util-linux")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            need("a private mount namespace (unshare -m)", f"run as a non-root user ({probe.stderr.strip()})")
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        yield lambda argv: ["unshare", "-m", "sh", "-c", script, str(folder), *argv]
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield lambda argv: argv
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.mark.parametrize("query", [["status"], ["events"], ["want", "list"], ["replay"]],
                         ids=["status", "events", "want-list", "replay"])
def test_queries_open_a_log_in_a_read_only_folder(tmp_path: Path, query: list[str]) -> None:
    """Item 7: query commands read a log in a read-only folder (a read-only mount, a backup)."""
    project = Project(tmp_path)
    project.build("raw/1")
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(project.db, ro / "wb.db")
    db = ro / "wb.db"
    args = [*query, str(db)] if query == ["replay"] else [*query, "--db", str(db)]
    with read_only_folder(ro) as wrap:
        p = subprocess.run(wrap([*CLI, *args]), capture_output=True, text=True, timeout=60, check=False,
                           cwd=tmp_path)
    assert p.returncode == 0, f"`wantbuild {' '.join(query)}` on a read-only folder: {p.stderr.strip()}"


# -- 8. smaller, same family --------------------------------------------------------------------------------


def test_the_restart_report_counts_only_the_events_it_replayed(project: Project) -> None:
    """Item 8: ``wantbuild restart`` reports how many events it replayed: those in the log before it, not its own
    recovery events."""
    proc = subprocess.Popen([*CLI, "run", str(project.graph), "--db", str(project.db), "--want", "raw/1"],
                            cwd=project.folder, env={**os.environ, "WB_TEST_SLOW": "30"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: project.db.exists() and any(e["type"] == "JobRunStarted" for e in events(project.db)),
                 "the run to start")
    finally:
        proc.kill()
        proc.wait()
    before = len(events(project.db))
    p = project.wb("restart", project.db, project.graph, "--json")
    assert p.returncode == 0, p.stderr
    replayed = json.loads(p.stdout)["recovery"]["events_replayed"]
    assert replayed == before, f"restart says it replayed {replayed} events; the log held {before} before it"


def test_upstream_building_names_what_the_want_waits_on(project: Project) -> None:
    """Item 8: ``WantUpstreamBuilding.waiting_on`` names the upstream refs the want waits for, not its own."""
    project.build("daily/1")
    (ev,) = [e for e in events(project.db, "--type", "WantUpstreamBuilding")][:1]
    assert ev["payload"]["waiting_on"] == ["raw/1"], ev


# -- what to build: library logging is quiet by default ------------------------------------------------------


def test_an_embedder_who_configured_nothing_sees_no_log_lines(tmp_path: Path) -> None:
    """What to build: an embedding program that configured no logging sees no library log lines on stdout."""
    script = tmp_path / "embed.py"
    script.write_text('''\
import sys

import anyio

import wantbuild

graph = wantbuild.Graph("quiet")


@graph.job("raw", outputs="raw/{i}")
async def raw(ctx):
    pass


async def main():
    async with wantbuild.open(sys.argv[1], graph) as rt:
        print((await (await rt.want("raw/1")).done()).status)


anyio.run(main)
''')
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "wb.db")], capture_output=True, text=True,
                       timeout=60, check=False, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["Successful"], f"library log lines on stdout:\n{p.stdout}"
