"""The runtime with real processes: command jobs for every outcome, and a runtime killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_graphs import chain_graph

from actors import JobRunStatus, PartitionStatus, WantStatus, check_log, check_replay_fidelity
from supervisor import Graph, Job, Runtime, open_runtime

JOBS = Path(__file__).parent / "jobs"


def command_graph(data: Path, **raw_opts: Any) -> Graph:
    """raw/{d} built by tests/jobs/build.py; daily/{d} discovers raw/{d} as a missing dependency."""
    py = sys.executable
    g = Graph("commands")
    raw_cmd = (py, str(JOBS / "build.py"), "--data", str(data), *raw_opts.pop("raw_args", ()))
    g.add_job(Job.create("raw", outputs="raw/{d}", command=raw_cmd, **raw_opts))
    g.add_job(Job.create("daily", outputs="daily/{d}",
                         command=(py, str(JOBS / "build.py"), "--data", str(data), "--needs", "raw/{last}")))
    return g


async def sound(rt: Runtime) -> None:
    await rt.wait_quiescent()
    world, violations = await check_log(rt.log, expect_all_terminal=True)
    assert [str(v) for v in violations] == []
    assert check_replay_fidelity(rt.world, world) == []


async def test_command_job_reporting_missing_deps(tmp_path: Path) -> None:
    """A command job prints missing_deps: the upstream is built by a derived want, then the job succeeds."""
    async with open_runtime(tmp_path / "wb.db", command_graph(tmp_path / "data")) as rt:
        st = await (await rt.want("daily/2026-11-01")).done(timeout=30)
        assert st.status is WantStatus.SUCCESSFUL
        assert [r.status for r in rt.runs()] == [JobRunStatus.DEP_MISS, JobRunStatus.SUCCEEDED,
                                                 JobRunStatus.SUCCEEDED]
        assert rt.runs()[0].missing == ("raw/2026-11-01",)
        run = rt.runs()[-1]
        assert run.stdout_path is not None
        assert "built daily/2026-11-01" in await anyio.Path(run.stdout_path).read_text()
        await sound(rt)


async def test_command_job_that_fails_then_succeeds(tmp_path: Path) -> None:
    """A command failing once with retries left is retried and succeeds; the failure's stderr is kept."""
    g = command_graph(tmp_path / "data", raw_args=("--fail-first",), retries=1, backoff=0.05)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        assert (await (await rt.want("raw/a")).done(timeout=30)).status is WantStatus.SUCCESSFUL
        failed, ok = rt.runs()
        assert (failed.status, failed.exit_code, failed.will_retry) == (JobRunStatus.FAILED, 2, True)
        assert (ok.retry_of, ok.attempt) == (failed.job_run_id, 2)
        assert failed.stderr_path is not None
        assert "transient failure" in await anyio.Path(failed.stderr_path).read_text()
        await sound(rt)


@pytest.mark.parametrize(
    ("script", "args", "opts", "reason"),
    [
        pytest.param("hang.py", (), {"timeout": 0.5}, "timed out after 0.5 s", id="hangs-past-timeout"),
        pytest.param("abort.py", (), {}, "SIGABRT", id="crashes"),
        pytest.param("heartbeat.py", ("--beats", "2", "--interval", "0.1", "--then-hang"),
                     {"heartbeat_timeout": 0.6}, "no heartbeat for 0.6 s", id="stops-heartbeating"),
    ],
)
async def test_command_job_failures_are_recorded_with_the_reason(
    tmp_path: Path, script: str, args: tuple[str, ...], opts: dict[str, Any], reason: str
) -> None:
    """A job that hangs, crashes or goes silent is killed and recorded Failed with why; the want Fails."""
    g = Graph("failing")
    g.add_job(Job.create("raw", outputs="raw/{d}", command=(sys.executable, str(JOBS / script), *args), **opts))
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        st = await (await rt.want("raw/x")).done(timeout=30)
        assert st.status is WantStatus.FAILED
        (run,) = rt.runs()
        assert run.status is JobRunStatus.FAILED
        assert reason in run.reason
        assert rt.get_partition("raw/x").status is PartitionStatus.FAILED
        assert reason in st.reason
        await sound(rt)


async def test_sigkill_mid_build_then_restart_finishes_every_want(tmp_path: Path) -> None:
    """SIGKILL a runtime while runs are in flight; a new runtime on the log recovers and every want ends."""
    db = tmp_path / "wb.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    # a plain child that we SIGKILL; its pipe is read in a worker thread
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, str(JOBS / "killed_runtime.py"), str(db)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        with anyio.fail_after(30):
            line = ""
            while line.strip() != "building":  # structlog's default output shares stdout
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
                assert line, "the runtime exited before building"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    g, _ = chain_graph(batch=2)
    async with open_runtime(db, g) as rt:
        assert rt.recovery.lost_runs, "runs were in flight when the runtime was killed"
        await rt.wait_idle(timeout=30)
        assert all(w.status is WantStatus.SUCCESSFUL for w in rt.wants())
        assert all(rt.get_partition(f"daily/{i}").status is PartitionStatus.LIVE for i in range(1, 7))
        lost = rt.runs(JobRunStatus.LOST)
        assert {r.job_run_id for r in lost} == set(rt.recovery.lost_runs)
        await sound(rt)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("attached", [pytest.param(True, id="recorded"), pytest.param(False, id="not-recorded")])
async def test_jobs_of_a_killed_runtime_are_fenced_before_the_restart_leases(tmp_path: Path, attached: bool) -> None:
    """SIGKILL a runtime while its command job runs: the kernel kills the job (PR_SET_PDEATHSIG); the child the
    job left in its group is found by the restarted runtime and stopped before anything is leased again, and the
    restart reports it (issue #10 item 2): by the pid and group recorded in JobRunAttached, or, when that never
    committed (killed right after the fork), by the run id and the log in the process's environment."""
    import json

    sys.path.insert(0, str(JOBS))
    from command_runtime import graph

    db = tmp_path / "wb.db"
    release = tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, str(JOBS / "command_runtime.py"), str(db), str(release), *(() if attached else
                                                                                    ("--no-attach",))],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    info: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        with anyio.fail_after(30):
            while not info:
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
                assert line, "the runtime exited before its job ran"
                if line.startswith("{"):
                    info = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    leader, child = info["pids"]
    try:
        with anyio.fail_after(10):
            while _alive(leader):  # noqa: ASYNC110 - nobody but its parent hears of its exit
                await anyio.sleep(0.02)
        assert _alive(child), "the job's own child should outlive it: that is what fencing is for"
        release.touch()
        async with open_runtime(db, graph(str(release))) as rt:
            assert not _alive(child)
            assert len(rt.recovery.fenced) == 1
            assert info["run"] in rt.recovery.fenced[0]
            assert str(child) in rt.recovery.fenced[0]
            assert rt.recovery.lost_runs == (info["run"],)
            assert (await rt.wait_want(rt.wants()[0].want_id, timeout=30)).status is WantStatus.SUCCESSFUL
            await sound(rt)
    finally:
        for pid in (leader, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
