"""Simulated jobs: the async callables the scenario's graph runs, and the outside world they act on.

A simulated job works for ``duration + per_partition * len(partitions)`` virtual seconds (heartbeating as it
goes), then succeeds or misbehaves as its ``behaviour`` says. The :class:`Simulation` is the world outside the
runtime: which outputs exist (a successful build writes them, a taint invalidates them), which builds are
executing, and the kill switches the timeline's ``kill`` steps pull. It survives runtime crashes, as storage
and processes would, which is what lets the runner count duplicate work (a partition built again although a
valid output already existed, or while another run was building it).

Flaky decisions use a :class:`random.Random` seeded from ``(seed, job run id, attempt)`` so that a run's luck
depends only on the scenario's seed and which run it is.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from eventlog import get_logger

from ._model import JobSpec, Scenario

log = get_logger("wantbuild.scenarios")

__all__ = ["Duplicate", "SimulatedFailure", "Simulation", "build_graph", "flaky_rng"]

JobCallable = Callable[[Any], Awaitable[None]]
_SLOT_RE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


class SimulatedFailure(RuntimeError):
    """A simulated job failing on purpose (its ``behaviour``, or a ``kill`` step)."""


def flaky_rng(seed: int, job_run_id: str, attempt: int) -> random.Random:
    """The RNG a flaky run draws from: a function of the scenario seed, the run id and the attempt only."""
    digest = hashlib.sha256(f"{seed}:{job_run_id}:{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def fill(template: str, params: Mapping[str, str]) -> str:
    """Format a ref template such as ``raw/{date}`` with a partition's params (``{{`` is a literal brace)."""
    out = _SLOT_RE.sub(lambda m: params[m.group(1)], template)
    return out.replace("{{", "{").replace("}}", "}")


def build_graph(sc: Scenario, make_run: Callable[[JobSpec], JobCallable | None],
                upstream: Mapping[str, tuple[str, Any]] | None = None) -> Any:
    """The scenario's ``supervisor.Graph``; ``make_run(job)`` gives each job's callable (None: a no-op).

    For one graph of several, ``upstream`` maps each graph it reads from to ``(db, link)`` (default: a placeholder
    log and no link, enough to check refs against the graph)."""
    from supervisor import Graph

    g = Graph(sc.name)
    for pool, size in sc.pools.items():
        g.add_pool(pool, size)
    for job in sc.jobs:
        run = make_run(job) or _noop
        g.job(
            job.name,
            outputs=list(job.outputs),
            deps=list(job.deps) or None,
            batch=job.batch,
            concurrency=job.concurrency,
            retries=job.retries,
            backoff=job.backoff,
            backoff_factor=job.backoff_factor,
            max_backoff=job.max_backoff,
            timeout=job.timeout,
            heartbeat_timeout=job.heartbeat_timeout,
            collision_policy=job.collision_policy,
            params={k: list(v) if isinstance(v, tuple) else v for k, v in job.params.items()} or None,
            pool=job.pool,
        )(run)
    for up in sc.upstream:
        db, link = (upstream or {}).get(up, (f"{up}.db", None))
        g.upstream(up, db=db, link=link)
    for schedule in sc.schedules:
        g.schedules[schedule.name] = schedule
    return g


async def _noop(ctx: Any) -> None:
    return None


@dataclass
class _Switch:
    job: str
    partitions: tuple[str, ...]
    scope: anyio.CancelScope | None = None
    killed: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """A partition build that repeated work: ``why`` is ``output exists`` or ``being built by r-...``."""

    at: float
    job_run_id: str
    ref: str
    why: str


@dataclass
class Simulation:
    """The world outside the runtime, shared by every runtime the scenario opens (it survives crashes)."""

    scenario: Scenario
    is_live: Callable[[str], bool] = field(default=lambda ref: False)
    now: Callable[[], float] = field(default=lambda: 0.0)
    builds: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, bool] = field(default_factory=dict)
    executing: dict[str, str] = field(default_factory=dict)
    switches: dict[str, _Switch] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)
    executions: int = 0
    scripted: dict[str, int] = field(default_factory=dict)  # ref -> scripted builds run

    def job_callable(self, job: JobSpec) -> JobCallable:
        async def run(ctx: Any) -> None:
            await self._run(job, ctx)

        run.__name__ = job.name
        run.__qualname__ = f"simulated:{job.name}"
        return run

    # -- the outside world's side of timeline steps -------------------------------------------------------
    def taint(self, refs: tuple[str, ...]) -> None:
        for ref in refs:
            self.outputs[ref] = False

    def restore(self, refs: tuple[str, ...]) -> None:
        """A canceled taint: the data was never bad, the output is valid again (if it was built)."""
        for ref in refs:
            if ref in self.outputs:
                self.outputs[ref] = True

    def kill(self, *, ref: str | None = None, job: str | None = None, reason: str = "") -> list[str]:
        """Kill the executing run(s) building ``ref`` or of ``job``; returns their ids (sorted)."""
        why = reason or "killed by the scenario"
        hit = sorted(rid for rid, sw in self.switches.items()
                     if (ref is not None and ref in sw.partitions) or (job is not None and sw.job == job))
        for rid in hit:
            sw = self.switches[rid]
            if sw.killed is None:
                sw.killed = why
                if sw.scope is not None:
                    sw.scope.cancel()
        return hit

    def fence(self, run_ids: list[str], reason: str) -> list[str]:
        """Stop the executing runs ``run_ids`` (a stalled runtime's, when a standby takes over); their ids."""
        hit = sorted(rid for rid in run_ids if rid in self.switches and self.switches[rid].killed is None)
        for rid in hit:
            sw = self.switches[rid]
            sw.killed = reason
            if sw.scope is not None:
                sw.scope.cancel()
        return hit

    # -- a job run -----------------------------------------------------------------------------------------
    async def _run(self, job: JobSpec, ctx: Any) -> None:
        from supervisor import MissingDeps

        run_id: str = ctx.job_run_id
        refs: tuple[str, ...] = tuple(ctx.partitions)
        params: tuple[Mapping[str, str], ...] = tuple(ctx.params)
        scripted = next(((ref, job.script[ref]) for ref in refs if ref in job.script), None)
        if scripted is not None:  # a replayed build (scenario from-log): the n-th build of its first ref
            first, script = scripted
            step = script[min(self.scripted.get(first, 0), len(script) - 1)]
            for ref in refs:
                self.scripted[ref] = self.scripted.get(ref, 0) + 1
            missing = [m for m in step.missing if not self.is_live(m)] if step.outcome == "missing_deps" else []
            if missing:
                raise MissingDeps(missing)
            failure = f"replayed failure of {job.name} (attempt {ctx.attempt})" if step.outcome == "fail" else None
            await self._execute(job, ctx, run_id, refs, step.duration, hang=step.outcome == "hang", failure=failure)
            return
        applies = not job.only or any(r in job.only for r in refs)
        if job.behaviour == "missing_deps" and applies:
            # Each partition reads its inputs (recorded as lineage); one that is not Live is a missing dependency.
            reads: dict[str, list[str]] = {}
            for ref, p in zip(refs, params, strict=True):
                for template in job.missing:
                    reads.setdefault(fill(template, p), []).append(ref)
            if hasattr(ctx, "read_many"):
                ctx.read_many(reads)
            else:  # pragma: no cover - a context without reads
                wanted = [dep for dep in reads if not self.is_live(dep)]
                if wanted:
                    raise MissingDeps(wanted)
        builds = [self.builds.get(r, 0) + 1 for r in refs]
        misbehave = False
        if applies and job.behaviour in ("fail", "hang"):
            misbehave = job.times is None or min(builds) <= job.times
        elif applies and job.behaviour == "flaky":
            misbehave = flaky_rng(self.scenario.seed, run_id, int(ctx.attempt)).random() < job.rate
        what = "flaky failure" if job.behaviour == "flaky" else "failure"
        await self._execute(job, ctx, run_id, refs, job.duration + job.per_partition * len(refs),
                            hang=misbehave and job.behaviour == "hang",
                            failure=f"simulated {what} of {job.name} (attempt {ctx.attempt})" if misbehave else None)

    async def _execute(self, job: JobSpec, ctx: Any, run_id: str, refs: tuple[str, ...], seconds: float, *,
                       hang: bool, failure: str | None) -> None:
        """Build ``refs``: count the builds (and duplicate work), work ``seconds`` (or forever if ``hang``), then
        fail with ``failure`` or write the outputs. A kill step ends it early."""
        self.executions += 1
        at = self.now()
        for ref in refs:
            self.builds[ref] = self.builds.get(ref, 0) + 1
            other = self.executing.get(ref)
            if other is not None and other != run_id:
                self.duplicates.append(Duplicate(at, run_id, ref, f"being built by {other}"))
            elif self.outputs.get(ref):
                self.duplicates.append(Duplicate(at, run_id, ref, "output exists"))
            self.executing[ref] = run_id
        switch = _Switch(job.name, refs)
        self.switches[run_id] = switch
        try:
            with anyio.CancelScope() as scope:
                switch.scope = scope
                if hang:
                    await anyio.Event().wait()
                await self._work(job, ctx, seconds)
            if switch.killed is not None:
                raise SimulatedFailure(f"{switch.killed} (run {run_id})")
            if failure is not None:
                raise SimulatedFailure(failure)
            for ref in refs:
                if ref in job.bad_partitions and (job.bad_times is None or self.builds[ref] <= job.bad_times):
                    ctx.fail(ref, f"simulated bad partition {ref} (build {self.builds[ref]})")
                else:
                    self.outputs[ref] = True
        finally:
            self.switches.pop(run_id, None)
            for ref in refs:
                if self.executing.get(ref) == run_id:
                    del self.executing[ref]

    async def _work(self, job: JobSpec, ctx: Any, seconds: float) -> None:
        hb = job.heartbeat
        if hb is None and job.heartbeat_timeout is not None:
            hb = job.heartbeat_timeout / 3
        clock = ctx.clock
        end = clock.now() + seconds
        while (left := end - clock.now()) > 1e-9:
            await ctx.sleep(min(left, hb) if hb else left)
            if hb:
                ctx.heartbeat()
