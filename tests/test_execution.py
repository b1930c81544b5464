"""Running one job run: in-process callables and subprocess commands, their outcomes, deadlines and cleanup."""

from __future__ import annotations

import heapq
import json
import os
import re
import stat
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog.testing

from actors import (
    Behavior,
    Clock,
    Ctx,
    Finished,
    JobRunQueued,
    JobRunStarted,
    Kernel,
    SystemClock,
    World,
    apply_job_run,
)
from supervisor import Graph, JobContext, MissingDeps, RunOutcome, run_callable, run_command

JOBS = Path(__file__).parent / "jobs"


class ManualClock:
    """Time that moves only when the test calls :meth:`advance`; sleepers wake in deadline order."""

    def __init__(self) -> None:
        self.time = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._arrivals = 0

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._arrivals += 1
        heapq.heappush(self._sleepers, (self.time + seconds, self._arrivals, event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, letting every task react to each wake-up before the next one."""
        target = self.time + seconds
        await anyio.wait_all_tasks_blocked()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, event = heapq.heappop(self._sleepers)
            self.time = max(self.time, when)
            event.set()
            await anyio.wait_all_tasks_blocked()
        self.time = target
        await anyio.wait_all_tasks_blocked()


def make_ctx(clock: Clock | None = None, *, run_id: str = "r-00000001", attempt: int = 1,
             partitions: tuple[str, ...] = ("daily/2026-11-01", "daily/2026-11-02")) -> JobContext:
    return JobContext(job_run_id=run_id, job_name="daily", partitions=partitions, attempt=attempt,
                      params=tuple({"date": p.split("/")[1]} for p in partitions), clock=clock or SystemClock())


async def collect(results: list[RunOutcome], run: Awaitable[RunOutcome]) -> None:
    results.append(await run)


def job(script: str, *args: str) -> list[str]:
    return [sys.executable, str(JOBS / script), *args]


async def command(tmp_path: Path, argv: list[str], ctx: JobContext | None = None, *, timeout: float | None = None,
                  heartbeat_timeout: float | None = None, **kwargs: Any) -> RunOutcome:
    return await run_command(argv, ctx or make_ctx(), log_dir=tmp_path / "logs", timeout=timeout,
                             heartbeat_timeout=heartbeat_timeout, **kwargs)


def text(path: str | Path | None) -> str:
    """The contents of a log file (sync: ruff's ASYNC240 keeps blocking file reads out of async tests)."""
    assert path is not None
    return Path(path).read_text()


def pids_in(path: str | Path | None) -> list[int]:
    """The pids in the ``pid N`` lines of a job's stdout log (none while it does not exist). The job, its shell and
    its sleep print into one file at the same time, so lines can interleave (``pid 26546pid 26550``)."""
    assert path is not None
    if not Path(path).exists():
        return []
    return [int(n) for n in re.findall(r"pid (\d+)", text(path))]


async def wait_for_pids(path: Path, count: int) -> list[int]:
    """The ``pid N`` lines a running job printed, once there are ``count`` of them."""
    with anyio.fail_after(10):
        while True:
            pids = pids_in(path)
            if len(pids) >= count:
                return pids
            await anyio.sleep(0.02)


async def assert_gone(pids: list[int]) -> None:
    """Every pid is gone: killed and reaped (grandchildren are reaped by init, which may take a moment)."""
    alive = list(pids)
    deadline = time.monotonic() + 10
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive.remove(pid)
        await anyio.sleep(0.05)
    assert alive == []


# -- in-process callables ----------------------------------------------------------------------------------


async def test_callable_succeeds_and_sees_its_context() -> None:
    """A job that returns is succeeded, and it saw its partitions, params and attempt."""
    seen: list[object] = []

    async def daily(ctx: JobContext) -> None:
        seen.extend([ctx.job_run_id, ctx.job_name, ctx.partitions, ctx.params, ctx.attempt])

    outcome = await run_callable(daily, make_ctx(attempt=2), timeout=None, heartbeat_timeout=None)

    assert outcome == RunOutcome("succeeded")
    assert seen == ["r-00000001", "daily", ("daily/2026-11-01", "daily/2026-11-02"),
                    ({"date": "2026-11-01"}, {"date": "2026-11-02"}), 2]


async def test_callable_reports_missing_deps() -> None:
    """Raising MissingDeps ends the run dep_miss with the refs, in order and without duplicates."""

    async def daily(ctx: JobContext) -> None:
        raise MissingDeps([f"raw/{p['date']}" for p in ctx.params] + ["raw/2026-11-01"])

    outcome = await run_callable(daily, make_ctx(), timeout=None, heartbeat_timeout=None)

    assert outcome == RunOutcome("dep_miss", reason="missing dependencies: raw/2026-11-01, raw/2026-11-02",
                                 missing=("raw/2026-11-01", "raw/2026-11-02"))


@pytest.mark.parametrize(
    ("refs", "problem"),
    [
        pytest.param([], "the list of missing refs is empty", id="empty"),
        pytest.param("raw/2026-11-01", "got a bare str 'raw/2026-11-01'", id="bare-str"),
        pytest.param(["raw/a", 7], "every missing ref must be a str, got int 7", id="not-str"),
        pytest.param(None, "expected a list of partition refs, got NoneType None", id="none"),
    ],
)
async def test_callable_invalid_missing_deps_fails(refs: Any, problem: str) -> None:
    """MissingDeps with anything but a non-empty list of strings fails the run, saying what was wrong."""

    async def daily(ctx: JobContext) -> None:
        raise MissingDeps(refs)

    outcome = await run_callable(daily, make_ctx(), timeout=None, heartbeat_timeout=None)

    assert (outcome.status, outcome.error_type, outcome.missing) == ("failed", "MissingDeps", ())
    assert outcome.reason.startswith("raised MissingDeps with an invalid list of refs: ")
    assert problem in outcome.reason


async def test_callable_failure_logs_the_traceback() -> None:
    """A job that raises fails with the exception's type and message; the traceback is logged."""

    async def daily(ctx: JobContext) -> None:
        raise ValueError("boom")

    with structlog.testing.capture_logs() as logs:
        outcome = await run_callable(daily, make_ctx(), timeout=None, heartbeat_timeout=None)

    assert outcome == RunOutcome("failed", reason="raised ValueError: boom", error_type="ValueError")
    [entry] = [e for e in logs if e["event"] == "job failed"]
    assert (entry["job_run_id"], entry["job"], type(entry["exc_info"])) == ("r-00000001", "daily", ValueError)


async def test_callable_fails_then_succeeds() -> None:
    """The same job fails on attempt 1 and succeeds on attempt 2 (a retry is just another run)."""

    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("transient")

    first = await run_callable(flaky, make_ctx(attempt=1), timeout=None, heartbeat_timeout=None)
    second = await run_callable(flaky, make_ctx(attempt=2), timeout=None, heartbeat_timeout=None)

    assert [first.status, first.reason, second.status] == ["failed", "raised RuntimeError: transient", "succeeded"]


@pytest.mark.parametrize(
    ("work", "expected"),
    [
        pytest.param(5.0, RunOutcome("succeeded"), id="within"),
        pytest.param(50.0, RunOutcome("failed", reason="timed out after 10.0 s"), id="past"),
    ],
)
async def test_callable_timeout_is_measured_on_the_injected_clock(work: float, expected: RunOutcome) -> None:
    """A job that sleeps past its timeout on the run's clock is cancelled at the deadline; one within it succeeds."""
    clock = ManualClock()
    cleaned_up: list[float] = []

    async def daily(ctx: JobContext) -> None:
        try:
            await ctx.sleep(work)
        finally:
            cleaned_up.append(clock.now())

    results: list[RunOutcome] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, results, run_callable(daily, make_ctx(clock), timeout=10, heartbeat_timeout=None))
        await clock.advance(60)

    assert results == [expected]
    assert cleaned_up == [min(work, 10.0)]


async def test_callable_timeout_cancels_a_job_blocked_on_anything() -> None:
    """The watchdog runs on the injected clock: an hour of virtual time kills a job blocked forever, at once."""
    clock = ManualClock()

    async def stuck(ctx: JobContext) -> None:
        await anyio.sleep_forever()

    results: list[RunOutcome] = []
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, results, run_callable(stuck, make_ctx(clock), timeout=3600, heartbeat_timeout=None))
        await clock.advance(3600)

    assert results == [RunOutcome("failed", reason="timed out after 3600.0 s")]
    assert time.monotonic() - started < 2


async def test_callable_missed_heartbeat_kills_only_the_silent_job() -> None:
    """With a 2 s heartbeat timeout, a job beating every second lives on while a silent one dies at t=2."""
    clock = ManualClock()
    ended: dict[str, float] = {}

    async def beating(ctx: JobContext) -> None:
        for _ in range(10):
            await ctx.sleep(1)
            ctx.heartbeat()

    async def silent(ctx: JobContext) -> None:
        try:
            await ctx.sleep(10)
        finally:
            ended["silent"] = clock.now()

    results: list[RunOutcome] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, results, run_callable(beating, make_ctx(clock), timeout=None, heartbeat_timeout=2))
        tg.start_soon(collect, results, run_callable(silent, make_ctx(clock), timeout=None, heartbeat_timeout=2))
        await clock.advance(11)

    assert results == [RunOutcome("failed", reason="no heartbeat for 2.0 s"), RunOutcome("succeeded")]
    assert ended == {"silent": 2.0}


async def test_callable_timeout_on_the_system_clock() -> None:
    """With the real clock, a 0.2 s timeout stops a job that would sleep for a minute."""

    async def slow(ctx: JobContext) -> None:
        await ctx.sleep(60)

    started = time.monotonic()
    outcome = await run_callable(slow, make_ctx(), timeout=0.2, heartbeat_timeout=None)

    assert outcome == RunOutcome("failed", reason="timed out after 0.2 s")
    assert time.monotonic() - started < 5


async def test_callable_cancelled_by_the_caller_propagates() -> None:
    """Cancelling the caller's scope cancels the job and the cancellation reaches the caller (no outcome)."""
    started = anyio.Event()
    job_saw: list[str] = []
    results: list[RunOutcome] = []

    async def daily(ctx: JobContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            job_saw.append("cancelled")
            raise

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(collect, results, run_callable(daily, make_ctx(), timeout=60, heartbeat_timeout=60))
            await started.wait()
            scope.cancel()

    assert (scope.cancelled_caught, job_saw, results) == (True, ["cancelled"], [])


async def test_callable_that_is_not_async_is_a_type_error() -> None:
    """A plain function is refused with a TypeError naming it, before anything runs."""
    calls: list[JobContext] = []

    def sync_job(ctx: JobContext) -> None:
        calls.append(ctx)

    with pytest.raises(TypeError, match=r"sync_job.*is not an async function"):
        await run_callable(sync_job, make_ctx(), timeout=None, heartbeat_timeout=None)  # type: ignore[arg-type]
    assert calls == []


# -- subprocess commands -----------------------------------------------------------------------------------


async def test_command_succeeds_with_partitions_and_env(tmp_path: Path) -> None:
    """Exit 0 is succeeded; the job got the refs as arguments and WANTBUILD_* in its environment."""
    ctx = make_ctx(run_id="r-00000042", attempt=3)

    outcome = await command(tmp_path, job("succeed.py"), ctx)

    logs = tmp_path / "logs"
    assert outcome == RunOutcome("succeeded", exit_code=0, stdout_path=str(logs / "r-00000042.stdout"),
                                 stderr_path=str(logs / "r-00000042.stderr"))
    told = json.loads(text(outcome.stdout_path).splitlines()[0])
    assert told == {"args": ["daily/2026-11-01", "daily/2026-11-02"], "job_run_id": "r-00000042", "job": "daily",
                    "attempt": "3"}


async def test_command_output_goes_to_log_files(tmp_path: Path) -> None:
    """stdout (protocol lines included) and stderr are kept verbatim in <log_dir>/<job_run_id>.stdout/.stderr."""
    outcome = await command(tmp_path, job("succeed.py"))

    stdout = text(outcome.stdout_path).splitlines()
    assert stdout[1:] == ['{"heartbeat": true}', "hello stdout"]
    assert text(outcome.stderr_path) == "hello stderr\n"


async def test_command_reports_missing_deps(tmp_path: Path) -> None:
    """A missing_deps line and a non-zero exit make the run dep_miss with those refs."""
    outcome = await command(tmp_path, job("missing_deps.py"))

    assert (outcome.status, outcome.missing, outcome.exit_code) == ("dep_miss", ("raw/2026-11-01", "raw/2026-11-02"), 1)
    assert outcome.reason == "missing dependencies: raw/2026-11-01, raw/2026-11-02"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param('{"missing_deps": []}', "the list of missing refs is empty", id="empty"),
        pytest.param('{"missing_deps": "raw/a"}', "expected a list of partition refs, got 'raw/a'", id="not-list"),
        pytest.param('{"missing_deps": [1]}', "every missing ref must be a str, got int 1", id="not-str"),
    ],
)
async def test_command_invalid_missing_deps_line_fails(tmp_path: Path, line: str, problem: str) -> None:
    """A malformed missing_deps line fails the run with the exit code and what was wrong with the line."""
    outcome = await command(tmp_path, job("missing_deps.py", "--line", line))

    assert (outcome.status, outcome.exit_code, outcome.missing) == ("failed", 1, ())
    assert outcome.reason.startswith(f"exit code 1; invalid missing_deps line: {problem}")


async def test_command_exit_code_fails(tmp_path: Path) -> None:
    """Any other non-zero exit is failed with "exit code N"."""
    outcome = await command(tmp_path, job("fail.py"))

    assert (outcome.status, outcome.reason, outcome.exit_code) == ("failed", "exit code 3", 3)
    assert text(outcome.stderr_path) == "cannot build daily/2026-11-01 daily/2026-11-02\n"


async def test_command_fails_then_succeeds(tmp_path: Path) -> None:
    """A job whose state (a file named in env) makes it fail once succeeds on the next attempt."""
    env = {"FLAKY_STATE": str(tmp_path / "state")}

    first = await command(tmp_path, job("flaky.py"), make_ctx(run_id="r-1", attempt=1), env=env)
    second = await command(tmp_path, job("flaky.py"), make_ctx(run_id="r-2", attempt=2), env=env)

    assert [(first.status, first.reason), (second.status, second.reason)] == [
        ("failed", "exit code 1"), ("succeeded", "")]
    assert text(second.stdout_path) == "built daily/2026-11-01 daily/2026-11-02\n"


async def test_command_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    """Past its timeout the job, its shell and the shell's ``sleep &`` are all killed and reaped."""
    outcome = await command(tmp_path, job("hang.py"), timeout=1.0, kill_grace=0.5)

    assert (outcome.status, outcome.reason, outcome.exit_code) == ("failed", "timed out after 1.0 s", -15)
    pids = pids_in(outcome.stdout_path)
    assert len(pids) == 3
    await assert_gone(pids)


async def test_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    """A job that ignores SIGTERM gets SIGKILL once kill_grace has passed, and nothing of it is left."""
    started = time.monotonic()
    outcome = await command(tmp_path, job("hang.py", "--ignore-term"), timeout=1.0, kill_grace=0.5)

    assert (outcome.status, outcome.reason, outcome.exit_code) == ("failed", "timed out after 1.0 s", -9)
    assert time.monotonic() - started >= 1.5
    pids = pids_in(outcome.stdout_path)
    assert len(pids) == 3
    await assert_gone(pids)


async def test_command_missed_heartbeat_kills_only_the_silent_job(tmp_path: Path) -> None:
    """With a 1 s heartbeat timeout, a job beating every 0.1 s finishes while one that falls silent is killed."""
    results: dict[str, RunOutcome] = {}

    async def go(name: str, *args: str) -> None:
        ctx = make_ctx(run_id=name)
        results[name] = await command(tmp_path, job("heartbeat.py", *args), ctx, heartbeat_timeout=1.0,
                                      kill_grace=0.5)

    async with anyio.create_task_group() as group:
        group.start_soon(go, "beating", "--beats", "20", "--interval", "0.1")
        group.start_soon(go, "silent", "--beats", "2", "--interval", "0.1", "--then-hang")

    assert (results["beating"].status, results["beating"].exit_code) == ("succeeded", 0)
    assert (results["silent"].status, results["silent"].reason) == ("failed", "no heartbeat for 1.0 s")


async def test_command_deadlines_use_the_injected_clock(tmp_path: Path) -> None:
    """A command's timeout is measured on ctx.clock: an hour of virtual time kills it at once."""
    clock = ManualClock()
    results: list[RunOutcome] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, results, command(tmp_path, job("hang.py"), make_ctx(clock), timeout=3600,
                                                kill_grace=0.5))
        pids = await wait_for_pids(tmp_path / "logs" / "r-00000001.stdout", 3)
        started = time.monotonic()
        await clock.advance(3600)

    assert [(r.status, r.reason) for r in results] == [("failed", "timed out after 3600.0 s")]
    assert time.monotonic() - started < 5
    await assert_gone(pids)


async def test_command_killed_by_signal(tmp_path: Path) -> None:
    """A job that dies of a signal fails with the signal's number and name."""
    outcome = await command(tmp_path, job("abort.py"))

    assert (outcome.status, outcome.reason, outcome.exit_code) == ("failed", "killed by signal 6 (SIGABRT)", -6)


@pytest.mark.parametrize("kind", [pytest.param("missing", id="not-found"), pytest.param("plain", id="not-executable")])
async def test_command_that_cannot_start_fails_cleanly(tmp_path: Path, kind: str) -> None:
    """A command that does not exist or is not executable fails, naming it; the reason is in the stderr log."""
    program = tmp_path / "no-such-job"
    if kind == "plain":
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(stat.S_IRUSR | stat.S_IWUSR)
    expected = "No such file or directory" if kind == "missing" else "Permission denied"

    outcome = await command(tmp_path, [str(program)])

    assert (outcome.status, outcome.exit_code) == ("failed", None)
    assert outcome.reason == f"cannot run {str(program)!r}: {expected}"
    assert text(outcome.stderr_path) == f"wantbuild: {outcome.reason}\n"


async def test_command_with_unusable_log_dir_fails_without_starting(tmp_path: Path) -> None:
    """A log_dir that cannot be created fails the run (nothing started) instead of raising into the runtime."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    marker = tmp_path / "ran"

    outcome = await run_command([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], make_ctx(),
                                log_dir=blocker / "logs", timeout=None, heartbeat_timeout=None)

    assert (outcome.status, outcome.error_type, outcome.stdout_path) == ("failed", "NotADirectoryError", None)
    assert outcome.reason.startswith(f"cannot open the job's log files in {str(blocker / 'logs')!r}")
    assert not marker.exists()


async def test_command_cancelled_from_outside_kills_its_group(tmp_path: Path) -> None:
    """Cancelling the caller's task group kills the job's whole group (SIGKILL for a job ignoring SIGTERM), reaps
    it under a shielded scope, then lets the cancellation propagate."""
    results: list[RunOutcome] = []
    cancelled: list[bool] = []

    async def go() -> None:
        try:
            results.append(await command(tmp_path, job("hang.py", "--ignore-term"), kill_grace=0.5))
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    async with anyio.create_task_group() as group:
        group.start_soon(go)
        pids = await wait_for_pids(tmp_path / "logs" / "r-00000001.stdout", 3)
        group.cancel_scope.cancel()

    assert (cancelled, results) == ([True], [])
    await assert_gone(pids)


async def test_command_leftover_processes_are_stopped_when_it_exits(tmp_path: Path) -> None:
    """A job that exits 0 leaving ``sleep 1000 &`` behind (holding stdout) succeeds at once; the sleep is killed."""
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        outcome = await command(tmp_path, job("leave_children.py"), kill_grace=0.5)

    assert (outcome.status, outcome.exit_code) == ("succeeded", 0)
    assert time.monotonic() - started < 5
    assert "job exited leaving processes in its process group; stopping them" in [e["event"] for e in logs]
    pids = pids_in(outcome.stdout_path)
    assert len(pids) == 1
    await assert_gone(pids)



# -- lineage and per-partition outcomes in the protocol ----------------------------------------------------


def resolver(status: dict[str, tuple[str, int]]) -> Any:
    def resolve(ref: str) -> tuple[str, int]:
        return status.get(ref, ("Missing", 0))

    return resolve


def lineage_ctx(**status: tuple[str, int]) -> JobContext:
    return JobContext(job_run_id="r-00000001", job_name="daily", partitions=("daily/1", "daily/2"),
                      resolve_read=resolver({k.replace("_", "/"): v for k, v in status.items()}))


async def test_command_read_lines_record_generations(tmp_path: Path) -> None:
    """{"read": [...]} lines record each Live input's generation; "into" narrows one to some partitions."""
    ctx = lineage_ctx(raw_1=("Live", 3), raw_2=("Live", 1))
    outcome = await command(tmp_path, job("protocol.py", "0", '{"read": ["raw/1"], "into": "daily/1"}',
                                          '{"read": ["raw/2"]}', "--"), ctx)
    assert (outcome.status, dict(outcome.read), dict(outcome.into)) == (
        "succeeded", {"raw/1": 3, "raw/2": 1}, {"raw/1": ("daily/1",)})


@pytest.mark.parametrize("code", ["0", "1"])
async def test_command_read_of_a_partition_not_live_is_a_dep_miss(tmp_path: Path, code: str) -> None:
    """A command that declares a read of a Tainted input ends dep_miss on it, whatever its exit status."""
    ctx = lineage_ctx(raw_1=("Tainted", 2), raw_2=("Live", 1))
    outcome = await command(tmp_path, job("protocol.py", code, '{"read": ["raw/1", "raw/2"]}', "--"), ctx)
    assert (outcome.status, outcome.missing) == ("dep_miss", ("raw/1",))
    assert "it read raw/1 (Tainted)" in outcome.reason


@pytest.mark.parametrize(("line", "problem"), [
    pytest.param('{"read": "raw/1"}', "invalid read line: expected a non-empty list", id="not-list"),
    pytest.param('{"read": ["daily/1"]}', "one of the partitions this run builds", id="own-output"),
    pytest.param('{"read": ["raw/1"], "into": ["daily/9"]}', "daily/9 is not a partition of this run", id="into"),
    pytest.param('{"failed": {"daily/9": "x"}}', "'daily/9' is not a partition of this run", id="fail-stranger"),
    pytest.param('{"failed": ["daily/1"]}', "invalid failed line", id="fail-not-object"),
])
async def test_command_protocol_error_fails_the_run(tmp_path: Path, line: str, problem: str) -> None:
    """A read or failed line the job may not send fails the run, even when it exits 0."""
    ctx = lineage_ctx(raw_1=("Live", 1))
    outcome = await command(tmp_path, job("protocol.py", "0", line, "--"), ctx)
    assert outcome.status == "failed"
    assert outcome.reason.startswith("job protocol error: ")
    assert problem in outcome.reason


async def test_command_failed_line_is_a_partial_success(tmp_path: Path) -> None:
    """{"failed": {...}} with exit 0: the run succeeded with those partitions failed; all of them: failed."""
    outcome = await command(tmp_path, job("protocol.py", "0", '{"failed": {"daily/2": "empty source"}}', "--"),
                            lineage_ctx())
    assert (outcome.status, dict(outcome.failed)) == ("succeeded", {"daily/2": "empty source"})
    every = await command(tmp_path, job("protocol.py", "0", '{"failed": {"daily/1": "a", "daily/2": "b"}}', "--"),
                          lineage_ctx())
    assert (every.status, every.reason) == ("failed", "every partition failed: daily/1: a (and 1 more)")
    ignored = await command(tmp_path, job("protocol.py", "3", '{"failed": {"daily/2": "x"}}', "--"), lineage_ctx())
    assert (ignored.status, ignored.reason, dict(ignored.failed)) == ("failed", "exit code 3", {})


# -- the runtime's local execution ---------------------------------------------------------------------------


class _Outcomes(Behavior):
    """Records the ``Finished`` outcome each run's actor is told."""

    def __init__(self, seen: dict[str, str]) -> None:
        self.seen = seen
        self.arrived = anyio.Event()

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        assert isinstance(msg, Finished)
        self.seen[ctx.key] = f"{msg.outcome.status}: {msg.outcome.reason}"
        self.arrived.set()

    async def until(self, *run_ids: str) -> None:
        with anyio.fail_after(5):
            while not all(r in self.seen for r in run_ids):
                await self.arrived.wait()
                self.arrived = anyio.Event()


async def test_local_runs_started_together_run_in_order_and_one_canceled_first_never_runs(tmp_path: Path) -> None:
    """Runs started in one turn run in order (a job that awaits does not hold up the next); a run canceled
    before its job began ends Canceled with its reason, its job never called; one canceled while it awaits too."""
    from supervisor._execution_glue import LocalExecution

    g = Graph("local")
    called: list[str] = []

    @g.job("part", outputs="part/{i}")
    async def part(ctx: JobContext) -> None:
        called.append(ctx.partitions[0])
        if ctx.partitions[0] == "part/1":
            await anyio.sleep_forever()

    seen: dict[str, str] = {}
    outcomes = _Outcomes(seen)
    async with Kernel(None, World(), SystemClock()) as kernel:
        kernel.register("job_run", lambda _key: outcomes, entity=False)
        local = LocalExecution(g, SystemClock(), tmp_path, kernel)
        for i in range(1, 5):
            queued = apply_job_run(None, JobRunQueued(job="part", partitions=(f"part/{i}",)), f"r-{i}", 0.0, 1)
            local.start(apply_job_run(queued, JobRunStarted(partitions=(f"part/{i}",)), f"r-{i}", 0.0, 2))
        assert local.cancel("r-3", "not needed any more")
        await outcomes.until("r-2", "r-3", "r-4")
        assert called == ["part/1", "part/2", "part/4"]
        assert seen == {"r-2": "succeeded: ", "r-3": "canceled: not needed any more", "r-4": "succeeded: "}
        assert local.poll("r-1") == "running"
        assert local.cancel("r-1", "stop")
        await outcomes.until("r-1")
        with anyio.fail_after(5):
            await local.aclose("closing")
        assert seen["r-1"] == "canceled: stop"
        assert local.running() == 0
