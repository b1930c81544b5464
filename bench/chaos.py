"""The crash drill: a served runtime, real command jobs, wants from the CLI, SIGKILL at random moments.

Each round, in a fresh folder:

1. ``wantbuild run GRAPH --db LOG --serve`` as a real subprocess, on a graph of command jobs
   (``bench/chaos_jobs/job.py``): ``raw/{i}`` <- ``clean/{i}`` (flaky, retried) <- ``daily/{i}`` <-
   ``weekly/{k}`` (three dailies). Dependencies are discovered: a job whose inputs are missing on disk reports
   them with ``{"missing_deps": [...]}``. Each run takes a random 0.05-3 s and writes its outputs under a lock
   that detects a second writer.
2. Client threads drive it only through the CLI: ``want create`` (some with ``--wait``), ``want cancel`` and
   ``taint``, each with ``--json``; what the CLI acknowledged (exit 0) is recorded.
3. Meanwhile the runtime is SIGKILLed at random moments (mostly while some job runs) and restarted with the
   same command; some restarts are killed again during start-up (replay, recovery). With ``--lock-faults N``,
   another process also holds the log's write lock for 6.5 s (past its 5 s busy timeout) N times a round, so
   commits fail meanwhile, as with a backup tool or an ``sqlite3`` shell left in a transaction.
4. The last runtime is left to finish (no pending command, every want terminal), then stopped with SIGTERM.

Then the checks (each violation is counted under its check and kept with its evidence):

- ``acknowledged``: every want the CLI acknowledged (an id printed, exit 0) is in the log and terminal; what
  ``--wait``, ``want cancel`` and ``taint`` reported agrees with the log; ``--wait`` never exits 0 before the
  want is terminal.
- ``exactly_once``: every command in the inbox was completed, and applied exactly once: one ``WantCreated``
  per ``want`` command; a cancel or taint (each with a unique reason) has its effect once if it reported ok,
  never if it reported an error.
- ``duplicate_derived``: no derived want for a ref that another active want already wanted when it was
  created (a user want committed after the DepMiss that triggered the derivation is a benign race, counted
  apart as ``derived_raced``).
- ``overlapping_writers``: no two job processes held one partition's output lock at once (the jobs record it).
- ``live_provenance``: the output on disk of every Live partition was written by the run the log says built it.
- ``orphans``: once a restarted runtime serves, no job process of an earlier runtime is still running; after
  the final clean stop, none at all.
- ``verify``: ``wantbuild replay LOG --verify --expect-terminal`` is clean.
- ``progress``: every restart serves within its time, the runtime never dies on its own, the last one settles
  and stops cleanly (exit 0) on SIGTERM. (A restart that exits with an error because a lock fault holds the
  write lock while it opens the log is fair: counted as ``refused_starts`` and started again.)
- ``cli``: no CLI call shows an internal error or a traceback, or hangs.

Usage: python bench/chaos.py --rounds 20 [--seed S] [--lock-faults N] [--keep] [--workdir DIR] [--report F]
Last line: rounds=... kills=... restart_kills=... lock_faults=... refused_starts=... wants=... commands=... runs=...
acks=... derived_raced=... violations=... violations_<check>=... (one per check)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOB_SCRIPT = Path(__file__).resolve().parent / "chaos_jobs" / "job.py"
WANTBUILD = (sys.executable, "-m", "wantbuild")

CHECKS = ("acknowledged", "exactly_once", "duplicate_derived", "overlapping_writers", "live_provenance",
          "orphans", "verify", "progress", "cli")
TERMINAL_WANT = frozenset({"Successful", "Failed", "UpstreamFailed", "Canceled", "Expired"})
WANT_END_EVENTS = {"WantSucceeded", "WantFailed", "WantUpstreamFailed", "WantCanceled", "WantExpired"}


@dataclass(frozen=True)
class DrillConfig:
    """How hard to drill. The defaults are the bench's; the test suite uses a small, fast variant."""

    rounds: int = 20
    seed: int = 0
    client_seconds: float = 10.0
    """How long the clients submit commands in a round (kills happen in this window)."""
    kills: tuple[int, int] = (1, 3)
    """SIGKILLs per round while serving (inclusive range)."""
    lock_faults: int = 0
    """Per round: how many times another process holds SQLite's write lock for ``lock_seconds`` (longer than the
    log's busy timeout, 5 s), so that the runtime's commits fail meanwhile (a backup or an ``sqlite3`` shell)."""
    lock_seconds: float = 6.5
    busy_kill_p: float = 0.7
    """Probability that a kill waits (up to 1.5 s) for a moment when some job process is running."""
    restart_kill_p: float = 0.35
    """Probability that a restart is itself killed during its start-up (replay, recovery)."""
    job_min_s: float = 0.05
    job_max_s: float = 3.0
    slow_p: float = 0.0
    slow_s: float = 0.0
    """With probability ``slow_p`` a run takes ``slow_s`` seconds more (the fast drill's short jobs need a few
    slow ones for kills to find jobs in flight)."""
    flaky: float = 0.3
    pool: int = 12
    """Partition indices 0..pool-1 per job (weeks 0..pool//3-1): small, so wants overlap and collide."""
    clients: int = 2
    pause: tuple[float, float] = (0.05, 0.5)
    """Seconds a client waits between two commands (uniform in this range)."""
    wait_p: float = 0.25
    serve_timeout: float = 30.0
    settle_timeout: float = 120.0
    stop_timeout: float = 30.0
    cli_timeout: float = 5.0


@dataclass
class Violation:
    check: str
    round: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"round {self.round}: {self.message}"


@dataclass
class CliCall:
    """One CLI invocation by a client: what it asked and what the CLI answered."""

    action: str
    args: list[str]
    code: int | None
    stdout: str
    stderr: str
    started: float
    ended: float
    meta: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None


@dataclass
class RoundResult:
    index: int
    folder: Path
    kills: int = 0
    restart_kills: int = 0
    lock_faults: int = 0
    refused_starts: int = 0
    """Restarts that exited with an error because a lock fault held the log's write lock as they opened it."""
    incarnations: int = 0
    wants: int = 0
    commands: int = 0
    runs: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    acks: int = 0
    derived_raced: int = 0
    violations: list[Violation] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per phase: ``clients`` (with the kills), ``settle``, ``stop``, ``checks``."""


# -- processes ------------------------------------------------------------------------------------------


def job_processes(tag: str) -> list[tuple[int, dict[str, str]]]:
    """Live job processes of this drill (``tag`` in their argv), with their environment."""
    found: list[tuple[int, dict[str, str]]] = []
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if tag.encode() not in argv or not any(a.endswith(b"job.py") for a in argv):
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.decode(errors="replace").partition("=")[::2] for kv in f.read().split(b"\0") if kv)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie is not running
        except OSError:
            continue  # exited meanwhile
        found.append((int(pid), env))
    return found


def kill_jobs(tag: str) -> int:
    """SIGKILL this drill's leftover job processes (hygiene after they were counted); returns how many."""
    n = 0
    for pid, _ in job_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    return n


class Runtime:
    """One incarnation of ``wantbuild run GRAPH --db LOG --serve``."""

    def __init__(self, folder: Path, incarnation: int) -> None:
        self.incarnation = incarnation
        self.err_path = folder / f"runtime-{incarnation}.stderr"
        self.started = time.monotonic()
        with open(folder / f"runtime-{incarnation}.stdout", "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*WANTBUILD, "run", str(folder / "graph.toml"), "--db", str(folder / "wb.db"), "--serve"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=folder,
                env={**os.environ, "CHAOS_INCARNATION": str(incarnation), "NO_COLOR": "1"},
            )
        self.killed = False

    def serving(self) -> bool:
        try:
            return "Serving " in self.err_path.read_text(errors="replace")
        except OSError:
            return False

    def wait_serving(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serving():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        self.killed = True
        self.proc.kill()
        self.proc.wait()

    def stderr_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.err_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# -- one round ------------------------------------------------------------------------------------------


class Round:
    def __init__(self, cfg: DrillConfig, index: int, folder: Path, tag: str) -> None:
        self.cfg = cfg
        self.index = index
        self.folder = folder
        self.db = folder / "wb.db"
        self.data = folder / "data"
        self.tag = tag
        self.rng = random.Random(f"{cfg.seed}:{index}:killer")
        self.result = RoundResult(index, folder)
        self.runtime: Runtime | None = None
        self.calls: list[CliCall] = []
        self.calls_lock = threading.Lock()
        self.acked_wants: list[str] = []
        self.stop_clients = threading.Event()
        self.waiters: list[threading.Thread] = []
        self.running: set[subprocess.Popen[str]] = set()
        self.started_at: list[float] = []  # wall time each runtime incarnation was started
        self.lock_windows: list[list[float]] = []  # [from, until] (monotonic) of each lock fault

    def by_runtime(self, at: float) -> str:
        """Which runtime incarnation an event's time ``at`` falls in, and how long after its start."""
        n = sum(1 for t in self.started_at if t <= at)
        return f"runtime {n}, {at - self.started_at[n - 1]:.2f} s after its start" if n else "before any runtime"

    def violation(self, check: str, message: str, **evidence: Any) -> None:
        self.result.violations.append(Violation(check, self.index, message, evidence))

    # -- set-up
    def write_graph(self) -> None:
        self.data.mkdir(parents=True)

        def cmd(kind: str, *extra: str) -> str:
            argv = ["python3", str(JOB_SCRIPT), "--data", str(self.data), "--tag", self.tag,
                    "--seed", str(self.cfg.seed), "--min-s", str(self.cfg.job_min_s),
                    "--max-s", str(self.cfg.job_max_s), "--slow-p", str(self.cfg.slow_p),
                    "--slow-s", str(self.cfg.slow_s), *extra, kind]
            return json.dumps(argv)

        (self.folder / "graph.toml").write_text(f"""\
[graph]
name = "chaos"

[job.raw]
outputs = "raw/{{i}}"
command = {cmd("raw")}
batch = 2
concurrency = 3

[job.clean]
outputs = "clean/{{i}}"
command = {cmd("clean", "--flaky", str(self.cfg.flaky))}
concurrency = 3
retries = 2
backoff = 0.1

[job.daily]
outputs = "daily/{{i}}"
command = {cmd("daily")}
batch = 2

[job.weekly]
outputs = "weekly/{{k}}"
command = {cmd("weekly")}
""")

    # -- the runtime's lifecycle
    def start(self) -> Runtime:
        self.result.incarnations += 1
        self.started_at.append(time.time())
        self.runtime = Runtime(self.folder, self.result.incarnations)
        return self.runtime

    def start_and_serve(self) -> None:
        """Start a runtime (killing some during start-up, then starting another) until one serves."""
        while True:
            rt = self.start()
            if self.rng.random() < self.cfg.restart_kill_p:
                time.sleep(self.rng.uniform(0.15, 0.8))
                if not rt.serving() and rt.proc.poll() is None:
                    rt.kill()
                    self.result.kills += 1
                    self.result.restart_kills += 1
                    continue
            if not rt.wait_serving(self.cfg.serve_timeout):
                if rt.proc.poll() is not None and self.locked_since(rt.started):
                    # Another process held the log's write lock past the busy timeout while it opened: refusing
                    # to start, with an error, is fair. Start again once the lock is gone.
                    self.result.refused_starts += 1
                    while self.locked_since(time.monotonic()):
                        time.sleep(0.1)
                    continue
                self.violation("progress", f"runtime {rt.incarnation} did not serve within "
                               f"{self.cfg.serve_timeout:g} s (exit {rt.proc.poll()})", stderr=rt.stderr_tail())
                if rt.proc.poll() is None:
                    rt.kill()
                continue
            self.scan_orphans(f"when runtime {rt.incarnation} started serving", rt.incarnation)
            return

    def scan_orphans(self, when: str, current: int | None) -> None:
        for pid, env in job_processes(self.tag):
            inc = env.get("CHAOS_INCARNATION")
            if current is not None and inc == str(current):
                continue
            self.violation("orphans", f"job process {pid} (run {env.get('WANTBUILD_JOB_RUN_ID')}, runtime "
                           f"{inc}) still running {when}", pid=pid, run=env.get("WANTBUILD_JOB_RUN_ID"),
                           incarnation=inc)

    def check_alive(self) -> None:
        rt = self.runtime
        if rt is not None and not rt.killed and rt.proc.poll() is not None:
            self.violation("progress", f"runtime {rt.incarnation} exited on its own with {rt.proc.returncode}",
                           stderr=rt.stderr_tail())
            self.start_and_serve()

    # -- clients
    def cli(self, action: str, args: list[str], timeout: float, **meta: Any) -> CliCall:
        started = time.time()
        proc = subprocess.Popen([*WANTBUILD, *args, "--db", str(self.db), "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=self.folder,
                                env={**os.environ, "NO_COLOR": "1"})
        with self.calls_lock:
            self.running.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = None
        call = CliCall(action, args, code, out, err, started, time.time(), meta)
        with self.calls_lock:
            self.running.discard(proc)
            self.calls.append(call)
            self.result.calls[action] += 1
        return call

    def kill_clients(self) -> None:
        with self.calls_lock:
            procs = list(self.running)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    def random_refs(self, rng: random.Random) -> list[str]:
        pool = self.cfg.pool
        refs: set[str] = set()
        for _ in range(rng.choice((1, 1, 2, 3))):
            kind = rng.choices(("weekly", "daily", "clean", "raw"), weights=(3, 3, 2, 2))[0]
            top = max(pool // 3, 1) if kind == "weekly" else pool
            refs.add(f"{kind}/{rng.randrange(top)}")
        return sorted(refs)

    def create(self, rng: random.Random, wait: bool) -> None:
        refs = self.random_refs(rng)
        args = ["want", "create", *refs, "--timeout", str(self.cfg.cli_timeout)]
        if wait:
            args.append("--wait")
        timeout = self.cfg.client_seconds + self.cfg.settle_timeout + 60 if wait else 60.0
        call = self.cli("want --wait" if wait else "want", args, timeout, refs=refs)
        doc = call.json()
        if call.code == 0 and isinstance(doc, dict) and isinstance(doc.get("want_id"), str):
            with self.calls_lock:
                self.acked_wants.append(doc["want_id"])

    def client(self, n: int) -> None:
        rng = random.Random(f"{self.cfg.seed}:{self.index}:client{n}")
        while not self.stop_clients.is_set():
            r = rng.random()
            if r < 0.6:
                wait = rng.random() < self.cfg.wait_p
                if wait:
                    t = threading.Thread(target=self.create, args=(random.Random(rng.random()), True), daemon=True)
                    self.waiters.append(t)
                    t.start()
                else:
                    self.create(rng, False)
            elif r < 0.78:
                with self.calls_lock:
                    known = list(self.acked_wants)
                if known:
                    want_id = rng.choice(known)
                    reason = f"chaos cancel {uuid.uuid4().hex[:10]}"
                    self.cli("cancel", ["want", "cancel", want_id, "--reason", reason, "--timeout",
                                        str(self.cfg.cli_timeout)], 60.0, want_id=want_id, reason=reason)
            else:
                ref = self.random_refs(rng)[0]
                reason = f"chaos taint {uuid.uuid4().hex[:10]}"
                self.cli("taint", ["taint", ref, "--reason", reason, "--timeout", str(self.cfg.cli_timeout)], 60.0,
                         refs=[ref], reason=reason)
            self.stop_clients.wait(rng.uniform(*self.cfg.pause))

    # -- the round
    def run(self) -> RoundResult:
        self.write_graph()
        self.start_and_serve()
        clients = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(self.cfg.clients)]
        begun = time.monotonic()
        for t in clients:
            t.start()
        n_kills = self.rng.randint(*self.cfg.kills)
        kill_at = sorted(self.rng.uniform(0.8, self.cfg.client_seconds) for _ in range(n_kills))
        lockers = [threading.Thread(target=self.hold_write_lock, args=(self.rng.uniform(0.8, self.cfg.client_seconds),),
                                    daemon=True) for _ in range(self.cfg.lock_faults)]
        for t in lockers:
            t.start()
        for at in kill_at:
            while time.monotonic() - begun < at:
                self.check_alive()
                time.sleep(0.05)
            self.check_alive()
            if self.rng.random() < self.cfg.busy_kill_p:  # prefer a moment with a job in flight (up to 1.5 s)
                deadline = time.monotonic() + 1.5
                while not job_processes(self.tag) and time.monotonic() < deadline:
                    time.sleep(0.02)
            assert self.runtime is not None
            self.runtime.kill()
            self.result.kills += 1
            self.start_and_serve()
        while time.monotonic() - begun < self.cfg.client_seconds:
            self.check_alive()
            time.sleep(0.05)
        self.stop_clients.set()
        for t in [*clients, *lockers]:
            t.join(120)
        mark = self.phase("clients", begun)
        self.settle()
        for t in self.waiters:
            t.join(max(1.0, self.cfg.stop_timeout))
            if t.is_alive():
                self.violation("cli", "a `want create --wait` did not return after every want was terminal")
        mark = self.phase("settle", mark)
        self.stop()
        mark = self.phase("stop", mark)
        self.check()
        self.phase("checks", mark)
        return self.result

    def phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.result.seconds[name] = round(now - since, 2)
        return now

    def hold_write_lock(self, after: float) -> None:
        """After ``after`` seconds, hold the log's write lock for ``lock_seconds`` from another connection."""
        if self.stop_clients.wait(after):
            return
        try:
            con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
            window = [time.monotonic(), float("inf")]
            try:
                con.execute("BEGIN IMMEDIATE")
                with self.calls_lock:
                    self.result.lock_faults += 1
                    self.lock_windows.append(window)
                time.sleep(self.cfg.lock_seconds)
                con.execute("ROLLBACK")
            finally:
                window[1] = time.monotonic()
                con.close()
        except sqlite3.Error as e:
            self.violation("progress", f"could not take the log's write lock for a lock fault: {e}")

    def locked_since(self, since: float) -> bool:
        """Whether a lock fault held the log's write lock at some moment from ``since`` (monotonic) to now."""
        with self.calls_lock:
            return any(until >= since for _, until in self.lock_windows)

    def settle(self) -> None:
        """Wait until the inbox is empty and every want is terminal (the runtime keeps serving)."""
        deadline = time.monotonic() + self.cfg.settle_timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if not self.pending_commands() and not self.active_wants():
                return
            time.sleep(0.5)
        self.violation("progress", f"not settled {self.cfg.settle_timeout:g} s after the clients stopped: "
                       f"{len(self.pending_commands())} pending command(s), active wants "
                       f"{self.active_wants()[:10]}", pending=self.pending_commands(), active=self.active_wants())

    def pending_commands(self) -> list[int]:
        with read_only(self.db) as con:
            return [r[0] for r in con.execute("SELECT id FROM commands WHERE completed_at IS NULL ORDER BY id")]

    def active_wants(self) -> list[str]:
        p = subprocess.run([*WANTBUILD, "want", "list", "--active", "--json", "--db", str(self.db)],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return [f"(want list failed: {p.stderr.strip()})"]
        return [w["want_id"] for w in json.loads(p.stdout)]

    def stop(self) -> None:
        rt = self.runtime
        assert rt is not None
        rt.proc.send_signal(signal.SIGTERM)
        try:
            code = rt.proc.wait(self.cfg.stop_timeout)
        except subprocess.TimeoutExpired:
            self.violation("progress", f"runtime {rt.incarnation} still running {self.cfg.stop_timeout:g} s "
                           "after SIGTERM", stderr=rt.stderr_tail())
            rt.kill()
        else:
            if code != 0:
                self.violation("progress", f"runtime {rt.incarnation} exited {code} after SIGTERM",
                               stderr=rt.stderr_tail())
        self.scan_orphans("after the last runtime stopped cleanly", None)
        kill_jobs(self.tag)

    # -- the checks
    def check(self) -> None:
        events = self.events()
        commands = self.commands()
        self.result.commands = len(commands)
        state = fold(events)
        self.result.wants = len(state.wants)
        self.result.runs = len(state.runs)
        self.check_cli()
        self.check_acknowledged(state)
        self.check_exactly_once(state, commands)
        self.check_derived(events, state)
        self.check_overlaps()
        self.check_provenance(state)
        self.check_verify()

    def events(self) -> list[dict[str, Any]]:
        p = subprocess.run([*WANTBUILD, "events", "--json", "--db", str(self.db)], capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            self.violation("verify", f"`wantbuild events` failed: {p.stderr.strip()}")
            return []
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    def commands(self) -> list[dict[str, Any]]:
        with read_only(self.db) as con:
            rows = con.execute("SELECT id, name, payload, completed_at, result FROM commands ORDER BY id").fetchall()
        return [{"id": i, "name": n, "payload": json.loads(p), "done": c is not None,
                 "result": json.loads(r) if r else None} for i, n, p, c, r in rows]

    def check_cli(self) -> None:
        for c in self.calls:
            if c.code is None:
                self.violation("cli", f"`wantbuild {' '.join(c.args)}` hung (killed after its timeout)",
                               stderr=c.stderr[-2000:])
            elif "internal error" in c.stderr or "Traceback" in c.stderr:
                self.violation("cli", f"`wantbuild {' '.join(c.args)}` exited {c.code} with an internal error: "
                               f"{c.stderr.strip()[-300:]}", stderr=c.stderr[-2000:])

    def check_acknowledged(self, st: LogState) -> None:
        for c in self.calls:
            doc = c.json()
            if c.code not in (0, 1) or not isinstance(doc, dict):
                continue
            self.result.acks += c.code == 0
            cmd = " ".join(c.args)
            if c.action == "want --wait" and "status" in doc:  # the want's final state, as --wait saw it
                w = st.wants.get(doc["want_id"])
                if w is None:
                    self.violation("acknowledged", f"`{cmd}` reported want {doc['want_id']} {doc['status']}, "
                                   "which is not in the log")
                elif doc["status"] != w["status"] or (c.code == 0) != (w["status"] == "Successful"):
                    self.violation("acknowledged", f"`{cmd}` exited {c.code} saying {doc['want_id']} is "
                                   f"{doc['status']}; the log says {w['status']}")
                continue
            if c.code != 0:
                continue
            if c.action == "want --wait":
                self.violation("acknowledged", f"`{cmd}` exited 0 without waiting for the want (it said "
                               f"{json.dumps(doc)[:200]})", stdout=c.stdout, stderr=c.stderr)
            if c.action.startswith("want"):
                want_id = doc.get("want_id")
                if want_id is None:  # queued: the want must exist now, made from the command
                    want_id = st.want_of_command.get(doc.get("command_id"))
                    if want_id is None:
                        self.violation("acknowledged", f"`{cmd}` was acknowledged as queued command "
                                       f"{doc.get('command_id')}, and no want was ever created from it")
                        continue
                w = st.wants.get(want_id)
                if w is None:
                    self.violation("acknowledged", f"`{cmd}` acknowledged want {want_id}; it is not in the log")
                elif w["status"] not in TERMINAL_WANT:
                    self.violation("acknowledged", f"want {want_id} (`{cmd}`) is still {w['status']} at the end")
            elif c.action == "cancel" and doc.get("via") == "inbox":
                w = st.wants.get(c.meta["want_id"], {})
                if doc.get("status") != w.get("status"):
                    self.violation("acknowledged", f"`{cmd}` reported {doc.get('status')}; the log says "
                                   f"{w.get('status')}")
            elif c.action == "taint" and doc.get("via") == "inbox":
                for ref in c.meta["refs"]:
                    if not st.tainted[(ref, c.meta["reason"])]:
                        self.violation("acknowledged", f"`{cmd}` was acknowledged; {ref} has no PartitionTainted "
                                       "with its reason in the log")

    def check_exactly_once(self, st: LogState, commands: list[dict[str, Any]]) -> None:
        for cmd in commands:
            cid, name, payload, result = cmd["id"], cmd["name"], cmd["payload"], cmd["result"] or {}
            what = f"command {cid} ({name} {json.dumps(payload)[:120]})"
            if not cmd["done"]:
                self.violation("exactly_once", f"{what} was never completed")
                continue
            ok = bool(result.get("ok"))
            if name == "want":
                made = st.wants_by_command.get(cid, [])
                if len(made) > (1 if ok else 0) or (ok and not made):
                    self.violation("exactly_once", f"{what} (result ok={ok}) created {len(made)} wants: "
                                   f"{made}", result=result)
                elif ok and result.get("want_id") != made[0]:
                    self.violation("exactly_once", f"{what} answered {result.get('want_id')}; the want made "
                                   f"from it is {made[0]}")
            elif name == "cancel":
                n = st.canceled[(payload["want_id"], payload["reason"])]
                applied = ok and result.get("status") == "Canceled"
                if n > 1 or (not ok and n):
                    self.violation("exactly_once", f"{what} applied {n} time(s) though it reported "
                                   f"{'ok' if ok else 'an error'}: {result}", result=result)
                elif applied and n == 0 and st.wants.get(payload["want_id"], {}).get("status") != "Canceled":
                    self.violation("exactly_once", f"{what} reported Canceled; the want is "
                                   f"{st.wants.get(payload['want_id'], {}).get('status')}", result=result)
            elif name == "taint":
                for ref in payload["refs"]:
                    n = st.tainted[(ref, payload["reason"])]
                    if n > 1 or (ok and n != 1) or (not ok and n):
                        self.violation("exactly_once", f"{what}: {ref} tainted {n} time(s) by it, though it "
                                       f"reported {'ok' if ok else 'an error'}: {result}", result=result)

    def check_derived(self, events: list[dict[str, Any]], st: LogState) -> None:
        active: dict[str, set[str]] = defaultdict(set)  # ref -> active wants on it
        refs_of: dict[str, tuple[str, ...]] = {}
        created_seq: dict[str, int] = {}
        for ev in events:
            if ev["entity_kind"] != "want":
                continue
            wid, typ = ev["entity_id"], ev["type"]
            if typ == "WantCreated":
                pl = ev["payload"]
                source = pl.get("source", "api")
                if ":" in source:
                    trigger = st.dep_miss_seq.get(source.split(":", 1)[1], 0) if source.startswith("job_run:") else 0
                    for ref in pl["refs"]:
                        others = sorted(active[ref])
                        if not others:
                            continue
                        derived = [o for o in others if ":" in st.wants[o]["source"]]
                        known = [o for o in others if created_seq[o] < trigger]
                        if derived or known or not trigger:
                            self.violation("duplicate_derived", f"derived want {wid} ({source}, seq {ev['seq']}, "
                                           f"{self.by_runtime(ev['at'])}) wants {ref}, already wanted by active "
                                           f"{', '.join(others)}", want=wid, ref=ref, others=others)
                        else:
                            self.result.derived_raced += 1
                refs_of[wid] = tuple(pl["refs"])
                created_seq[wid] = ev["seq"]
                for ref in pl["refs"]:
                    active[ref].add(wid)
            elif typ in WANT_END_EVENTS:
                for ref in refs_of.get(wid, ()):
                    active[ref].discard(wid)

    def check_overlaps(self) -> None:
        path = self.data / "overlaps.jsonl"
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            o = json.loads(line)
            self.violation("overlapping_writers", f"{o['ref']}: run {o['run']} (pid {o['pid']}, runtime "
                           f"{o['incarnation']}) found its output being written by {o['holder']}", **o)

    def check_provenance(self, st: LogState) -> None:
        for ref, p in sorted(st.partitions.items()):
            if p["status"] != "Live":
                continue
            out = self.data / "out" / (ref.replace("/", "__") + ".json")
            try:
                doc = json.loads(out.read_text())
            except (OSError, ValueError) as e:
                self.violation("live_provenance", f"{ref} is Live (built by {p['built_by']}) but its output "
                               f"cannot be read: {e}")
                continue
            if doc["job_run_id"] != p["built_by"]:
                self.violation("live_provenance", f"{ref} is Live, built by {p['built_by']} per the log, but its "
                               f"output was written by {doc['job_run_id']} (runtime {doc['incarnation']}, "
                               f"{st.runs.get(doc['job_run_id'], {}).get('status', '?')} in the log)",
                               ref=ref, built_by=p["built_by"], written_by=doc["job_run_id"])

    def check_verify(self) -> None:
        p = subprocess.run([*WANTBUILD, "replay", str(self.db), "--verify", "--expect-terminal", "--json"],
                           capture_output=True, text=True, timeout=120)
        try:
            doc = json.loads(p.stdout)["verify"]
        except (ValueError, KeyError, TypeError):
            doc = None
        if p.returncode != 0 or not doc or not doc.get("ok"):
            self.violation("verify", f"`wantbuild replay --verify --expect-terminal` exited {p.returncode}: "
                           f"{p.stderr.strip()[-300:]}", verify=doc)


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only SQLite connection to the log (for the commands table), closed on exit."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        yield con
    finally:
        con.close()


@dataclass
class LogState:
    """What the checks need from the log, folded from ``wantbuild events --json``."""

    wants: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    wants_by_command: dict[int, list[str]] = field(default_factory=dict)
    want_of_command: dict[Any, str] = field(default_factory=dict)
    canceled: Counter[tuple[str, str]] = field(default_factory=Counter)
    tainted: Counter[tuple[str, str]] = field(default_factory=Counter)
    dep_miss_seq: dict[str, int] = field(default_factory=dict)


def fold(events: list[dict[str, Any]]) -> LogState:
    st = LogState()
    for ev in events:
        kind, eid, typ, pl = ev["entity_kind"], ev["entity_id"], ev["type"], ev["payload"]
        if kind == "want":
            if typ == "WantCreated":
                st.wants[eid] = {"status": "New", "source": pl.get("source", "api"), "refs": pl["refs"]}
                if pl.get("command_id") is not None:
                    st.wants_by_command.setdefault(pl["command_id"], []).append(eid)
                    st.want_of_command.setdefault(pl["command_id"], eid)
            elif typ.startswith("Want") and typ != "WantSlaMissed":
                st.wants[eid]["status"] = {"WantSucceeded": "Successful"}.get(typ, typ[len("Want"):])
                if typ == "WantCanceled":
                    st.canceled[(eid, pl.get("reason", ""))] += 1
        elif kind == "job_run":
            run = st.runs.setdefault(eid, {"status": "Queued"})
            run["status"] = typ[len("JobRun"):]
            if typ == "JobRunDepMiss":
                st.dep_miss_seq[eid] = ev["seq"]
        elif kind == "partition":
            part = st.partitions.setdefault(eid, {"status": "Missing", "built_by": None})
            part["status"] = typ[len("Partition"):]
            if typ == "PartitionLive":
                part["built_by"] = pl["job_run_id"]
            elif typ == "PartitionTainted":
                st.tainted[(eid, pl.get("reason", ""))] += 1
    for run in st.runs.values():  # "Queued" / "Deferred" / "Started" events do not name a status
        run["status"] = {"Started": "Running", "Deferred": "Queued"}.get(run["status"], run["status"])
    return st


# -- the drill --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    rounds: list[RoundResult] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        return [v for r in self.rounds for v in r.violations]

    def by_check(self) -> dict[str, list[Violation]]:
        out: dict[str, list[Violation]] = {c: [] for c in CHECKS}
        for v in self.violations:
            out[v.check].append(v)
        return out

    def figures(self) -> dict[str, Any]:
        rs = self.rounds
        fig: dict[str, Any] = {
            "rounds": len(rs), "kills": sum(r.kills for r in rs),
            "restart_kills": sum(r.restart_kills for r in rs), "lock_faults": sum(r.lock_faults for r in rs),
            "refused_starts": sum(r.refused_starts for r in rs),
            "wants": sum(r.wants for r in rs),
            "commands": sum(r.commands for r in rs), "runs": sum(r.runs for r in rs),
            "acks": sum(r.acks for r in rs), "derived_raced": sum(r.derived_raced for r in rs),
            "violations": len(self.violations),
        }
        for check, vs in self.by_check().items():
            fig[f"violations_{check}"] = len(vs)
        return fig


def run_drill(cfg: DrillConfig, workdir: Path, *, on_round: Callable[[RoundResult], None] | None = None) -> Tally:
    """Run ``cfg.rounds`` rounds in folders under ``workdir``; every process started is stopped."""
    tag = f"chaos-{uuid.uuid4().hex[:12]}"
    tally = Tally()
    try:
        for i in range(1, cfg.rounds + 1):
            rnd = Round(cfg, i, workdir / f"round-{i:03d}", tag)
            try:
                tally.rounds.append(rnd.run())
            finally:
                if rnd.runtime is not None and rnd.runtime.proc.poll() is None:
                    rnd.runtime.kill()
                rnd.stop_clients.set()
                rnd.kill_clients()
            if on_round is not None:
                on_round(tally.rounds[-1])
    finally:
        kill_jobs(tag)
    return tally


def print_tally(tally: Tally, out: Any = sys.stdout) -> None:
    by = tally.by_check()
    print(f"{'check':<20} violations  example", file=out)
    for check in CHECKS:
        vs = by[check]
        print(f"{check:<20} {len(vs):>10}  {str(vs[0])[:150] if vs else '-'}", file=out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--client-seconds", type=float, default=DrillConfig.client_seconds)
    ap.add_argument("--lock-faults", type=int, default=0, help="per round: times another process holds the log's "
                    "write lock past the busy timeout (commits fail meanwhile)")
    ap.add_argument("--workdir", type=Path, help="where the rounds' folders go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep every round's folder (default: only failing ones)")
    ap.add_argument("--report", type=Path, help="write every violation with its evidence as JSON here")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    cfg = DrillConfig(rounds=a.rounds, seed=seed, client_seconds=a.client_seconds, lock_faults=a.lock_faults)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="wantbuild-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"chaos drill: {a.rounds} rounds, seed {seed}, in {workdir}", file=sys.stderr)

    def progress(r: RoundResult) -> None:
        counts = Counter(v.check for v in r.violations)
        print(f"round {r.index}: {r.kills} kills ({r.restart_kills} during start-up), {r.lock_faults} lock faults, "
              f"{r.wants} wants, "
              f"{r.commands} commands, {r.runs} runs, {len(r.violations)} violations "
              f"{dict(counts) if counts else ''} (seconds: {r.seconds})", file=sys.stderr, flush=True)
        if not r.violations and not a.keep:
            shutil.rmtree(r.folder, ignore_errors=True)

    tally = run_drill(cfg, workdir, on_round=progress)
    print_tally(tally)
    if a.report:
        a.report.write_text(json.dumps([{"check": v.check, "round": v.round, "message": v.message,
                                         "evidence": v.evidence} for v in tally.violations], indent=1, default=str))
    if tally.violations:
        print(f"kept the folders of failing rounds under {workdir}", file=sys.stderr)
    elif not a.keep and a.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(" ".join(f"{k}={v}" for k, v in tally.figures().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
