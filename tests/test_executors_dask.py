"""Job runs on a real Dask cluster (a LocalCluster of two worker processes): outcomes, deadlines, cancel, faults."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from conftest import need
from executor_jobs import (
    OLD_RUN_SLEEPS,
    TESTS,
    add_command,
    alive,
    assert_never_finished,
    cell,
    check_remote_reads_and_partial_failures,
    graph,
    pids_in,
    read,
    sound,
    start_orchestrator,
    text,
    wait_for,
)

from actors import JobRunStatus, WantStatus
from supervisor import open_runtime
from supervisor._executors import DaskExecutor

distributed: Any
try:
    import distributed
except ImportError:  # pragma: no cover - CI installs it
    distributed = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    if distributed is None:
        need("Dask (distributed)", "pip install 'wantbuild[dask]'")
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=2, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as c:  # never 8787: it may be taken
        yield c


def executor(cluster: Any, **kwargs: Any) -> DaskExecutor:
    return DaskExecutor(address=cluster.scheduler_address, **kwargs)


async def test_async_sync_and_dep_miss_jobs_run_on_workers(cluster: Any, tmp_path: Path) -> None:
    """Async and plain functions run in the workers' processes; a remote MissingDeps derives a want as locally."""
    g = graph(tmp_path / "state", executor(cluster))
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        wants = [await rt.want(["fast/1", "sync/1"]), await rt.want("down/2")]
        for h in wants:
            assert (await h.done(timeout=30)).status is WantStatus.SUCCESSFUL
        workers = {int(read(tmp_path / "state", ref)[1]) for ref in ("fast/1", "sync/1", "down/2", "fast/2")}
        assert os.getpid() not in workers
        assert read(tmp_path / "state", "sync/1")[-1] == "sync"
        runs = rt.runs()
        assert sorted(str(r.status) for r in runs) == ["DepMiss", "Succeeded", "Succeeded", "Succeeded", "Succeeded"]
        started = [r for r in runs if r.started_at is not None]
        assert {r.executor for r in started} == {"dask"}
        for r in started:
            assert r.handle is not None
            namespace = r.handle["key"].split("-")[1]
            assert r.handle == {"key": f"wantbuild-{namespace}-{r.job_run_id}-a{r.attempt}",
                                "scheduler": cluster.scheduler_address}
        fast = rt.get_run(read(tmp_path / "state", "fast/1")[0])
        assert json.loads(read(tmp_path / "state", "fast/1")[3]) == {
            "run": fast.job_run_id, "generations": dict(zip(fast.partitions, fast.generations, strict=True))}
        await sound(rt)


async def test_closing_a_runtime_leaves_no_error_in_the_schedulers_log(
        cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The scheduler (in this process) logs nothing at ERROR or above when wantbuild's client leaves it."""
    g = graph(tmp_path / "state", executor(cluster))
    with caplog.at_level(logging.ERROR, logger="distributed"):
        async with open_runtime(tmp_path / "wb.db", g) as rt:
            assert (await (await rt.want("fast/1")).done(timeout=30)).status is WantStatus.SUCCESSFUL
        client = await distributed.Client(cluster.scheduler_address, asynchronous=True)
        async with client:  # a round trip: the scheduler has handled the other client's departure
            await client.scheduler.identity()
    assert [r.getMessage()[:200] for r in caplog.records if r.name.startswith("distributed")] == []


async def test_command_job_runs_on_a_worker_with_the_protocol(cluster: Any, tmp_path: Path) -> None:
    """A command job runs on a worker: its missing_deps line makes a DepMiss, then it builds; logs in log_dir."""
    data, logs = tmp_path / "data", tmp_path / "logs"
    g = graph(tmp_path / "state", executor(cluster, log_dir=str(logs)))
    build = [sys.executable, str(TESTS / "jobs" / "build.py"), "--data", str(data)]
    add_command(g, "raw", build)
    add_command(g, "daily", [*build, "--needs", "raw/{last}"])
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want("daily/7")
        assert (await h.done(timeout=30)).status is WantStatus.SUCCESSFUL
        assert (data / "daily__7").exists()
        assert (data / "raw__7").exists()
        dep_miss = next(r for r in rt.runs() if r.status is JobRunStatus.DEP_MISS)
        assert dep_miss.missing == ("raw/7",)
        assert dep_miss.stdout_path == f"{logs}/{dep_miss.job_run_id}.stdout"
        assert '{"missing_deps": ["raw/7"]}' in text(dep_miss.stdout_path)
        await sound(rt)


async def test_heartbeats_from_a_worker_keep_a_run_alive_and_their_absence_fails_it(cluster: Any,
                                                                                    tmp_path: Path) -> None:
    """Heartbeats sent on a worker reach the deadline check; a job that stops sending them is Failed and stopped."""
    g = graph(tmp_path / "state", executor(cluster), heartbeat_timeout=0.6)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        ok = await rt.want("beat/1")
        silent = await rt.want("silent/1")
        assert (await ok.done(timeout=30)).status is WantStatus.SUCCESSFUL
        assert (await silent.done(timeout=30)).status is WantStatus.FAILED
        failed = next(r for r in rt.runs() if r.job == "silent")
        assert failed.reason == "no heartbeat for 0.6 s"
        await sound(rt)


async def test_a_job_hanging_past_its_timeout_is_killed_on_the_worker(cluster: Any, tmp_path: Path) -> None:
    """A command hanging past its timeout: the run Fails with the reason and its process group dies on the worker."""
    logs = tmp_path / "logs"
    g = graph(tmp_path / "state", executor(cluster, log_dir=str(logs), kill_grace=0.5))
    add_command(g, "hang", [sys.executable, str(TESTS / "jobs" / "hang.py")], timeout=1.0)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want("hang/1")
        assert (await h.done(timeout=30)).status is WantStatus.FAILED
        run = rt.runs()[0]
        assert run.reason == "timed out after 1.0 s"
        pids = pids_in(f"{logs}/{run.job_run_id}.stdout")
        assert len(pids) == 3  # the job, its shell and the shell's sleep
        await wait_for(lambda: not any(alive(p) for p in pids), timeout=5)
        await sound(rt)


async def test_a_job_blocking_its_worker_is_timed_out_by_wantbuild_and_its_late_result_ignored(
        cluster: Any, tmp_path: Path) -> None:
    """A job the worker cannot time out (it blocks the worker's loop) is Failed by wantbuild's own deadline; what
    the worker reports once it can is recorded as JobRunResultIgnored, never applied."""
    g = graph(tmp_path / "state", executor(cluster), timeout=0.5)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want("blocking/1")
        assert (await h.done(timeout=30)).status is WantStatus.FAILED
        run = rt.runs()[0]
        assert run.status is JobRunStatus.FAILED
        assert run.reason == "timed out after 0.5 s"
        await wait_for(lambda: rt.get_run(run.job_run_id).ignored_results == 1)
        history = [r.type for r in await rt.history("job_run", run.job_run_id)]
        assert history == ["JobRunQueued", "JobRunStarted", "JobRunFailed", "JobRunResultIgnored"]
        assert read(tmp_path / "state", "blocking/1")[-1] == "done"  # it did finish, after the verdict
        await sound(rt)


async def test_a_success_after_cancel_is_recorded_as_ignored(cluster: Any, tmp_path: Path) -> None:
    """A want canceled while its job blocks the worker: the run ends Canceled; the job's later success arrives as
    a late result, kept as JobRunResultIgnored(succeeded), and the partition is not Live."""
    g = graph(tmp_path / "state", executor(cluster))
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want("blocking/1")
        await wait_for(lambda: cell(tmp_path / "state", "blocking/1").exists())
        await rt.cancel(h.want_id)
        await wait_for(lambda: rt.runs()[0].ignored_results == 1)
        run = rt.runs()[0]
        assert run.status is JobRunStatus.CANCELED
        ignored = (await rt.history("job_run", run.job_run_id))[-1]
        assert ignored.type == "JobRunResultIgnored"
        assert ignored.event.status == "succeeded"  # type: ignore[attr-defined]
        assert rt.get_partition("blocking/1").status == "Missing"
        await sound(rt)


async def test_canceling_a_want_cancels_its_remote_run(cluster: Any, tmp_path: Path) -> None:
    """Canceling the want while its job runs on a worker: the run ends Canceled once the job is stopped there."""
    logs = tmp_path / "logs"
    g = graph(tmp_path / "state", executor(cluster, log_dir=str(logs), kill_grace=0.5))
    add_command(g, "hang", [sys.executable, str(TESTS / "jobs" / "hang.py")])
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want(["hang/1", "slow/1"])
        await wait_for(lambda: cell(tmp_path / "state", "slow/1").exists()
                       and os.path.exists(f"{logs}/{rt.runs()[0].job_run_id}.stdout")
                       and len(pids_in(f"{logs}/{rt.runs()[0].job_run_id}.stdout")) == 3)
        hang_run = next(r for r in rt.runs() if r.job == "hang")
        pids = pids_in(f"{logs}/{hang_run.job_run_id}.stdout")
        await rt.cancel(h.want_id)
        await wait_for(lambda: all(r.terminal for r in rt.runs()))
        assert {str(r.status) for r in rt.runs()} == {"Canceled"}
        assert not any(alive(p) for p in pids)  # stopped before the run was recorded Canceled
        assert read(tmp_path / "state", "slow/1")[-1] == "started"
        await sound(rt)


async def test_sigkill_of_a_worker_mid_run_fails_the_run_and_the_retry_succeeds(cluster: Any,
                                                                               tmp_path: Path) -> None:
    """SIGKILL of the worker running a job: the run Fails naming the worker, the retry succeeds, one success."""
    g = graph(tmp_path / "state", executor(cluster), retries=1)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want("slow/1")
        await wait_for(lambda: cell(tmp_path / "state", "slow/1").exists())
        os.kill(int(read(tmp_path / "state", "slow/1")[1]), signal.SIGKILL)
        assert (await h.done(timeout=60)).status is WantStatus.SUCCESSFUL
        first, second = rt.runs()
        assert first.status is JobRunStatus.FAILED
        assert "Dask worker tcp://127.0.0.1:" in first.reason
        assert "died or was removed" in first.reason
        assert first.will_retry
        assert second.status is JobRunStatus.SUCCEEDED
        assert second.attempt == 2
        assert read(tmp_path / "state", "slow/1")[0] == second.job_run_id
        await sound(rt)
    client = await distributed.Client(cluster.scheduler_address, asynchronous=True)
    async with client:
        await client.wait_for_workers(2, timeout=30)  # the nanny restarted it: leave the cluster as found


async def test_restart_fences_the_previous_runtimes_tasks(cluster: Any, tmp_path: Path) -> None:
    """A runtime SIGKILLed with a job running on the cluster: the job is stopped there, and the restarted runtime
    confirms it (fence) before it builds the partition again: never two builds of it at once."""
    db, state = tmp_path / "wb.db", tmp_path / "state"
    proc = start_orchestrator(tmp_path, db, f"DaskExecutor(address={cluster.scheduler_address!r})",
                              slow_for=OLD_RUN_SLEEPS)
    try:
        await wait_for(lambda: cell(state, "slow/1").exists(), timeout=60)
        started_at, first = time.monotonic(), read(state, "slow/1")
    finally:
        proc.kill()
        proc.wait()
    g = graph(state, executor(cluster), slow_for=0.2)
    with structlog.testing.capture_logs() as logs:
        async with open_runtime(db, g) as rt:
            fenced = [e for e in logs if e["event"] == "fenced the previous runtime's Dask tasks"]
            assert [e["confirmed"] for e in fenced] == [True]
            assert rt.recovery.lost_runs == (first[0],)
            lost = rt.get_run(first[0])
            assert lost.executor == "dask"
            assert lost.status is JobRunStatus.LOST
            h = await rt.want("slow/1")  # the first want is still active; this one joins or follows it
            assert (await h.done(timeout=60)).status is WantStatus.SUCCESSFUL
            last = read(state, "slow/1")
            assert last[0] != first[0]
            assert last[-1] == "done"
            await sound(rt)
    await assert_never_finished(state, "slow/1", first[0], started_at)


async def test_scheduler_unreachable_runs_are_lost_and_requeued_and_the_runtime_keeps_serving(
        tmp_path: Path) -> None:
    """The scheduler dies mid-run: the run is Lost after lost_after, its partition re-queued; wants wait; when a
    scheduler is back at the address the partition is built."""
    if distributed is None:
        need("Dask (distributed)", "pip install 'wantbuild[dask]'")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    sched_cmd = [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard"]
    worker_cmd = [str(bin_dir / "dask"), "worker", address, "--host", "127.0.0.1", "--no-dashboard",
                  "--nthreads", "1", "--nworkers", "1"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str]) -> subprocess.Popen[bytes]:
        p = _popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": f"{TESTS}:{TESTS.parent}"}, start_new_session=True)
        procs.append(p)
        return p

    try:
        scheduler = start(sched_cmd)
        start(worker_cmd)
        _wait_port(port)
        g = graph(tmp_path / "state", DaskExecutor(address=address, lost_after=1.0), slow_for=2.0)
        async with open_runtime(tmp_path / "wb.db", g) as rt:
            h = await rt.want(["slow/1"])
            await wait_for(lambda: cell(tmp_path / "state", "slow/1").exists(), timeout=60)
            os.killpg(scheduler.pid, signal.SIGKILL)
            await wait_for(lambda: any(r.status is JobRunStatus.LOST for r in rt.runs()), timeout=30)
            lost = next(r for r in rt.runs() if r.status is JobRunStatus.LOST)
            assert "lost the connection to the Dask scheduler" in lost.reason
            await anyio.sleep(1.0)
            assert not h.state.terminal  # the want waits; the runtime still serves
            other = await rt.want("fast/9")
            start(sched_cmd)  # a scheduler is back at the address, and a worker (the old one gave up on it)
            _wait_port(port)
            start(worker_cmd)
            assert (await h.done(timeout=90)).status is WantStatus.SUCCESSFUL
            assert (await other.done(timeout=90)).status is WantStatus.SUCCESSFUL
            await sound(rt)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=TESTS.parent, **kwargs)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


async def test_remote_jobs_record_their_reads_and_partial_failures(cluster: Any, tmp_path: Path) -> None:
    """A batch on a Dask worker reads each raw partition into its daily one and fails one day: the reads are
    resolved to generations when the outcome arrives, the bad day alone is Failed, the rest Live."""
    await check_remote_reads_and_partial_failures(executor(cluster), "dask", tmp_path / "wb.db")
