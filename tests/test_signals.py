"""SIGINT/SIGTERM on the CLI's runtime commands (issue #10 item 5), through the real `wantbuild` entry point.

The first signal stops cleanly at any moment (start-up and replay included) and the command exits 130/143 after
printing the outcome read after the shutdown; a second one is reported and does not skip the cleanup; a third
exits at once, saying what it leaves behind (the next start marks it Lost).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors import JobRunStatus, PartitionStatus, rebuild
from eventlog import EventLog

JOBS = Path(__file__).parent / "jobs"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def wantbuild(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wantbuild", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def hang_graph(tmp_path: Path) -> Path:
    g = tmp_path / "g.toml"
    g.write_text(f'''
[graph]
name = "hang"

[job.raw]
outputs = "raw/{{d}}"
command = ["{sys.executable}", "{JOBS / "hang.py"}", "--ignore-term"]
''')
    return g


def wait_for_pids(stdout_file: Path, n: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stdout_file.exists():
            pids = [int(pid) for pid in re.findall(r"pid (\d+)", stdout_file.read_text())]  # lines may interleave
            if len(pids) >= n:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"the job did not print {n} pids into {stdout_file}")


async def log_state(db: Path) -> tuple[dict[str, JobRunStatus], dict[str, PartitionStatus]]:
    async with EventLog.open(db, writer=False) as log:
        world = await rebuild(log)
        report = await log.verify()
    assert report.problems == ()
    return ({r.job_run_id: r.status for r in world.runs.values()},
            {p.ref: p.status for p in world.partitions.values()})


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.6])
def test_an_interrupt_at_any_moment_of_start_up_stops_cleanly(tmp_path: Path, delay: float) -> None:
    """SIGINT at any moment of `wantbuild demo` (imports, replay, start-up, building): never swallowed, never
    exit 0 unless the demo had finished, and the log stays sound. (Before wantbuild's code runs, Python's own
    KeyboardInterrupt ends the process by SIGINT: nothing was started.)"""
    proc = wantbuild("demo", "--db", str(tmp_path / "wb.db"), "--data", str(tmp_path / "data"), cwd=tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    if code == 0:  # it won the race: then it built everything
        assert "Successful" in out
    elif "KeyboardInterrupt" in err:  # still importing: Python's own handler ended it before anything started
        assert not (tmp_path / "wb.db").exists()
    else:
        assert code in (130, -signal.SIGINT), (code, err[-2000:])
    if code == 130:
        assert "interrupted by SIGINT" in err
        if (tmp_path / "wb.db").exists():
            asyncio.run(log_state(tmp_path / "wb.db"))


def test_a_second_signal_is_reported_and_cleanup_still_happens(tmp_path: Path) -> None:
    """SIGTERM, then SIGTERM again while a job that ignores SIGTERM is being stopped: the second one is
    reported, the job is still killed (after its grace), the run is recorded Canceled and the partition
    Missing, the exit code is 143, and no job process is left."""
    db = tmp_path / "wb.db"
    proc = wantbuild("run", str(hang_graph(tmp_path)), "--want", "raw/x", "--db", str(db), cwd=tmp_path)
    job, shell, sleeper = wait_for_pids(tmp_path / "wb.db.logs" / "r-00000001.stdout", 3)
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the job ignores SIGTERM: the runtime waits out its kill grace (2 s)
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc)
        assert code == 143, err[-3000:]
        assert "SIGTERM again: still shutting down cleanly" in err
        assert "interrupted by SIGTERM" in err
        for pid in (job, shell, sleeper):
            assert not alive(pid), f"job process {pid} outlived the runtime"
        runs, parts = asyncio.run(log_state(db))
        assert runs == {"r-00000001": JobRunStatus.CANCELED}
        assert parts == {"raw/x": PartitionStatus.MISSING}
    finally:
        for pid in (job, shell, sleeper):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_third_signal_exits_at_once_saying_what_it_leaves(tmp_path: Path) -> None:
    """A third SIGTERM exits at once: it names the run left in flight; the job dies with the runtime
    (PR_SET_PDEATHSIG); the log is sound, and the next run marks the run Lost."""
    db = tmp_path / "wb.db"
    proc = wantbuild("run", str(hang_graph(tmp_path)), "--want", "raw/x", "--db", str(db), cwd=tmp_path)
    job, shell, sleeper = wait_for_pids(tmp_path / "wb.db.logs" / "r-00000001.stdout", 3)
    try:
        for _ in range(3):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        code, _, err = finish(proc)
        assert code == 143, err[-3000:]
        assert "a third time: exiting now" in err
        assert "r-00000001" in err
        deadline = time.monotonic() + 5
        while alive(job) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(job)
        runs, _ = asyncio.run(log_state(db))
        assert runs["r-00000001"] in (JobRunStatus.RUNNING, JobRunStatus.CANCELED)
    finally:
        for pid in (job, shell, sleeper):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
