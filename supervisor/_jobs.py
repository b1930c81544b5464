"""The jobs of a graph: :class:`Job`, :class:`Retry`, :class:`TemplateDeps`, and the checks a job passes alone.

A :class:`Job` says what it produces (output :class:`~supervisor._pattern.Pattern` s), from what (``deps``), and
how it runs (an async function or an argv, batch, concurrency, retry, timeouts, executor, pool). Checks that
involve several jobs (no two may produce one ref) belong to the graph.

Decisions worth knowing:

- Two output patterns of one job may not overlap (the ref's params would be ambiguous).
- String ``deps`` are templates formatted with the output's params (:class:`TemplateDeps`); every template's
  placeholders must exist in every output pattern of the job.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from actors import POLICIES, CollisionPolicy
from actors._partition_set import ParamType, PartitionSetError, param_type

from ._graph_errors import GraphError
from ._pattern import Pattern

__all__ = ["DepsFunction", "Job", "JobCallable", "Retry", "TemplateDeps"]

if TYPE_CHECKING:
    from ._executors.base import Executor

JobCallable: TypeAlias = Callable[[Any], Awaitable[None]]
"""An async job: called with the executor's context object (``ctx.partitions``, ``ctx.heartbeat()``)."""
DepsFunction: TypeAlias = Callable[[str, Mapping[str, str]], Sequence[str]]
"""Static dependencies of one ref, given the ref and the params its output pattern matched."""

_JOB_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class Retry:
    """Retry policy: at most ``max_attempts`` runs in all; exponential backoff between them, capped."""

    max_attempts: int = 1
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) failed, before attempt ``attempt + 1``.

        ``backoff * factor ** (attempt - 1)``, at most ``max_backoff``.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        try:
            delay = self.backoff * self.factor ** (attempt - 1)
        except OverflowError:
            return self.max_backoff
        return min(delay, self.max_backoff)


@dataclass(frozen=True)
class TemplateDeps:
    """Static dependencies given as ref templates (``"raw/{date}"``), formatted with the output's params."""

    templates: tuple[Pattern, ...]

    def __call__(self, ref: str, params: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(template.format(**params) for template in self.templates)


@dataclass(frozen=True)
class Job:
    """One job of a graph. Build it with :meth:`Job.create` (or :meth:`Graph.job`), which parses and checks.

    Exactly one of ``run`` (an async callable taking the executor's context) and ``command`` (an argv; the
    refs to build are appended as arguments) is set. ``concurrency=None`` means unlimited;
    ``collision_policy=None`` means the graph's, else the runtime's default. ``declared_command`` is the argv
    as written in a graph file before paths were resolved; the fingerprint uses it when set so that moving
    a checkout or switching virtualenvs does not change the graph's fingerprint.
    """

    name: str
    outputs: tuple[Pattern, ...]
    deps: DepsFunction | None = None
    batch: int = 1
    concurrency: int | None = None
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    run: JobCallable | None = None
    command: tuple[str, ...] | None = None
    collision_policy: CollisionPolicy | None = None
    declared_command: tuple[str, ...] | None = None
    executor: Executor | Literal["local"] | None = None
    """Where the job's runs execute: an executor (``DaskExecutor(...)``, ``RayExecutor(...)``), ``"local"`` (the
    runtime's own processes, whatever the default), or None for the runtime's or graph's default."""
    resources: Mapping[str, float] | None = None
    """Placement hints passed to the executor's engine (``{"gpu": 1}``); ignored by the local executor."""
    param_types: Mapping[str, ParamType] = field(default_factory=dict)
    """Types of the output patterns' parameters (``{"date": date}``): what ranges (``daily/2026-01-01..2026-01-31``)
    may run over, what a ref's value must look like, and where a partition's data time comes from."""
    pool: str | None = None
    """The concurrency pool this job's runs count against (``[pools]`` of the graph), across jobs."""
    rebuild_stale: bool = False
    """Keep its partitions fresh: while an active want covers one that is stale (an input rebuilt since), it is
    rebuilt, at once when its input is rebuilt (see docs/lineage.md, "Staleness")."""

    @classmethod
    def create(
        cls,
        name: str,
        *,
        outputs: str | Pattern | Sequence[str | Pattern],
        run: JobCallable | None = None,
        command: Sequence[str] | None = None,
        deps: DepsFunction | str | Sequence[str] | None = None,
        batch: int = 1,
        concurrency: int | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        backoff_factor: float = 2.0,
        max_backoff: float = 300.0,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        collision_policy: CollisionPolicy | None = None,
        declared_command: Sequence[str] | None = None,
        executor: Executor | Literal["local"] | None = None,
        resources: Mapping[str, float] | None = None,
        params: Mapping[str, object] | None = None,
        pool: str | None = None,
        rebuild_stale: bool = False,
    ) -> Job:
        """Build and check a job; raises :class:`GraphError` naming the job. ``retries`` = attempts - 1.

        ``params`` types the output patterns' parameters: ``{"date": "date", "hour": "int", "region": ["eu",
        "us"]}`` (types: date, hour, int, or a list of values for an enum)."""
        _check_name(name)
        try:
            patterns = tuple(_as_pattern(output) for output in _as_list(outputs, "outputs"))
            job_deps: DepsFunction | None
            if deps is None or callable(deps):
                job_deps = deps
            else:
                job_deps = TemplateDeps(tuple(_as_pattern(template) for template in _as_list(deps, "deps")))
        except GraphError as e:
            raise GraphError(f"job {name!r}: {e}") from e
        if not _is_int(retries) or retries < 0:
            raise GraphError(f"job {name!r}: retries must be an int >= 0, got {retries!r}")
        if isinstance(command, str):
            raise GraphError(f"job {name!r}: command must be an argv list such as {command.split()!r}, not a str")
        typed = _param_types(name, params)
        job = cls(
            name=name,
            outputs=patterns,
            deps=job_deps,
            batch=batch,
            concurrency=concurrency,
            retry=Retry(max_attempts=retries + 1, backoff=backoff, factor=backoff_factor, max_backoff=max_backoff),
            timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
            run=run,
            command=None if command is None else tuple(command),
            collision_policy=collision_policy,
            declared_command=tuple(declared_command) if declared_command is not None else None,
            executor=executor,
            resources=dict(resources) if isinstance(resources, Mapping) else resources,
            param_types=MappingProxyType(typed),
            pool=pool,
            rebuild_stale=rebuild_stale,
        )
        _check_job(job)
        return job

    def check_params(self, ref: str, params: Mapping[str, str]) -> str | None:
        """Why ``ref``'s typed parameter values are not of their types, or None if they are."""
        for name, kind in self.param_types.items():
            value = params.get(name)
            if value is not None and kind.ordinal(value) is None:
                return (f"{{{name}}} of job {self.name!r} is {kind.describe()}, but {ref!r} has {value!r} there; "
                        f"write a value of that type")
        return None

    def data_time(self, ref: str) -> float | None:
        """The data time of ``ref`` (seconds since the epoch, UTC): the start of the hour or day its ``hour`` or
        ``date`` typed parameter names (an hour wins over a date); None if it has neither."""
        params = self.params(ref) if any(kind.timed for kind in self.param_types.values()) else None
        if not params:
            return None
        for kind_name in ("hour", "date"):
            for name, kind in self.param_types.items():
                if kind.kind == kind_name and name in params:
                    n = kind.ordinal(params[name])
                    if n is not None:
                        return kind.epoch(n)
        return None

    def params(self, ref: str) -> Mapping[str, str] | None:
        """The params of ``ref`` under the first of this job's output patterns it matches, or None."""
        for pattern in self.outputs:
            params = pattern.match(ref)
            if params is not None:
                return params
        return None


def _param_types(job: str, params: Mapping[str, object] | None) -> dict[str, ParamType]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise GraphError(f'job {job!r}: params must be a mapping of parameter names to types, e.g. {{"date": '
                         f'"date"}}, got {params!r}')
    out: dict[str, ParamType] = {}
    for name, spec in params.items():
        try:
            out[str(name)] = param_type(spec)
        except PartitionSetError as e:
            raise GraphError(f"job {job!r}: params: {{{name}}}: {e}") from None
    return out


def _as_list(value: object, what: str) -> list[object]:
    if isinstance(value, str | Pattern):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    kinds = (
        "a function (ref, params) -> refs, a template str or a list of them"
        if what == "deps"
        else "a str or a list of str"
    )
    raise GraphError(f"{what} must be {kinds}, got {type(value).__name__} {value!r}")


def _as_pattern(value: object) -> Pattern:
    if isinstance(value, Pattern):
        return value
    if isinstance(value, str):
        return Pattern(value)
    raise GraphError(f"a pattern must be a str, got {type(value).__name__} {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _is_async_callable(value: object) -> bool:
    while isinstance(value, functools.partial):
        value = value.func
    return inspect.iscoroutinefunction(value) or (
        callable(value) and inspect.iscoroutinefunction(getattr(value, "__call__", None))  # noqa: B004
    )


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _JOB_NAME_RE.fullmatch(name):
        raise GraphError(
            f"invalid job name {name!r}: a job name is 1-128 characters, a letter or '_' first, then letters, "
            f"digits, '_', '.' or '-'"
        )


def _check_job(job: Job) -> None:
    """Everything that can be checked about one job on its own."""
    _check_name(job.name)

    def fail(problem: str) -> GraphError:
        return GraphError(f"job {job.name!r}: {problem}")

    if not isinstance(job.outputs, tuple) or not job.outputs:
        raise fail("no outputs; give at least one output pattern, e.g. outputs='daily/{date}'")
    if not all(isinstance(pattern, Pattern) for pattern in job.outputs):
        raise fail(f"outputs must be Pattern objects, got {job.outputs!r}; use Job.create(outputs=[...])")
    for i, pattern in enumerate(job.outputs):
        for other in job.outputs[i + 1 :]:
            if other == pattern:
                raise fail(f"lists the output pattern {pattern.text!r} twice; list it once")
            witness = pattern.common_ref(other)
            if witness is not None:
                raise fail(
                    f"output patterns {pattern.text!r} and {other.text!r} can both match {witness!r}; a job's "
                    f"patterns must be disjoint so a ref's params are unambiguous: drop one or make them disjoint"
                )
    if job.deps is not None and not callable(job.deps):
        raise fail(f"deps must be a function (ref, params) -> refs or a list of templates, got {job.deps!r}")
    if isinstance(job.deps, TemplateDeps):
        for template in job.deps.templates:
            for pattern in job.outputs:
                missing = [name for name in template.names if name not in pattern.names]
                if missing:
                    names = ", ".join(f"{{{name}}}" for name in missing)
                    raise fail(
                        f"the dependency template {template.text!r} uses {names}, which the output pattern "
                        f"{pattern.text!r} does not have; use only the output's placeholders "
                        f"({', '.join(f'{{{n}}}' for n in pattern.names) or 'none'})"
                    )
                if template == pattern:
                    raise fail(f"depends on its own output {template.text!r}; a partition cannot be built from itself")
    for name in job.param_types:
        if not any(name in pattern.names for pattern in job.outputs):
            slots = sorted({n for p in job.outputs for n in p.names})
            raise fail(f"params types {{{name}}}, which no output pattern has; type one of the patterns' "
                       f"placeholders ({', '.join(f'{{{n}}}' for n in slots) or 'none'})")
    if job.pool is not None and (not isinstance(job.pool, str) or not _JOB_NAME_RE.fullmatch(job.pool)):
        raise fail(f"pool must be a pool's name (letters, digits, '_', '.', '-'), got {job.pool!r}")
    if not _is_int(job.batch) or job.batch < 1:
        raise fail(f"batch must be an int >= 1 (partitions per run), got {job.batch!r}")
    if job.concurrency is not None and (not _is_int(job.concurrency) or job.concurrency < 1):
        raise fail(f"concurrency must be an int >= 1, or None for unlimited, got {job.concurrency!r}")
    _check_retry(job.retry, fail)
    for what, value in (("timeout", job.timeout), ("heartbeat_timeout", job.heartbeat_timeout)):
        if value is not None and (not _is_number(value) or value <= 0):
            raise fail(f"{what} must be a number of seconds > 0, or None for no limit, got {value!r}")
    if (job.run is None) == (job.command is None):
        which = "both" if job.run is not None else "neither"
        raise fail(f"has {which} run and command; give exactly one (an async function, or an argv to execute)")
    if job.run is not None and not callable(job.run):
        raise fail(f"run must be an async function (async def ...), got {job.run!r}")
    if job.run is not None and job.executor == "local" and not _is_async_callable(job.run):
        raise fail(
            f"run must be an async function (async def ...), got {job.run!r}; wrap blocking code with "
            f"anyio.to_thread.run_sync (a plain function can run only on a cluster executor)"
        )
    _check_executor(job, fail)
    if job.command is not None and (
        not isinstance(job.command, tuple)
        or not job.command
        or not all(isinstance(arg, str) for arg in job.command)
        or not job.command[0]
    ):
        raise fail(f"command must be a non-empty argv of str, e.g. ['python3', 'jobs/daily.py'], got {job.command!r}")
    if not isinstance(job.rebuild_stale, bool):
        raise fail(f"rebuild_stale must be true or false, got {job.rebuild_stale!r}")
    if job.collision_policy is not None and job.collision_policy not in POLICIES:
        raise fail(f"collision_policy must be one of {', '.join(POLICIES)}, got {job.collision_policy!r}")


def _check_executor(job: Job, fail: Callable[[str], GraphError]) -> None:
    from ._executors.base import Executor, check_resources

    if job.executor is not None and job.executor != "local" and not isinstance(job.executor, Executor):
        raise fail(
            f"executor must be an executor (DaskExecutor(...), RayExecutor(...)), 'local' or None, got "
            f"{job.executor!r}"
        )
    try:
        check_resources(job.resources)
    except ValueError as e:
        raise fail(str(e)) from None


def _check_retry(retry: Retry, fail: Callable[[str], GraphError]) -> None:
    if not isinstance(retry, Retry):
        raise fail(f"retry must be a Retry, got {retry!r}")
    if not _is_int(retry.max_attempts) or retry.max_attempts < 1:
        raise fail(f"retry.max_attempts must be an int >= 1 (retries must be >= 0), got {retry.max_attempts!r}")
    checks = (
        ("backoff", retry.backoff, 0.0),
        ("backoff_factor", retry.factor, 1.0),
        ("max_backoff", retry.max_backoff, 0.0),
    )
    for what, value, low in checks:
        if not _is_number(value) or value < low:
            raise fail(f"{what} must be a number >= {low:g}, got {value!r}")
