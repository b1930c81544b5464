"""The job graph: which job builds which partition refs, and how.

A :class:`Graph` holds :class:`Job` s. Each job produces the refs matched by its output :class:`Pattern` s
(``daily/{date}``); exactly one job may produce any ref, which :meth:`Graph.add_job` proves when a job is
added (an exact automaton check, not a heuristic) so :meth:`Graph.job_for` never has to choose.

The graph's vocabulary lives in modules of its own, layered so that none imports a later one:
``_graph_errors`` (:class:`GraphError`, :class:`NoJobForRef`, :class:`UnknownJob`), ``_pattern``
(:class:`Pattern` and its automaton), ``_jobs`` (:class:`Job`, :class:`Retry`, :class:`TemplateDeps` and their
checks), then this module. It re-exports their public names, so ``from ._graph import Graph, Job`` works.

Decisions worth knowing:

- :meth:`Graph.fingerprint` covers job names, output patterns, dependency templates, batch, concurrency, retry,
  timeouts and the command argv (as written in the graph file, see :attr:`Job.declared_command`); not callable
  identity, the graph's name or collision policies.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from actors import POLICIES, CollisionPolicy
from actors._refs import InvalidRef, validate_ref
from eventlog import get_logger
from eventlog._errors import WantbuildError

from ._graph_errors import GraphError, NoJobForRef, UnknownJob
from ._hints import did_you_mean
from ._jobs import _JOB_NAME_RE, DepsFunction, Job, JobCallable, Retry, TemplateDeps, _check_job, _is_int
from ._pattern import Pattern

__all__ = [
    "DepsFunction",
    "Graph",
    "GraphError",
    "Job",
    "JobCallable",
    "NoJobForRef",
    "Pattern",
    "Retry",
    "TemplateDeps",
    "UnknownJob",
]

if TYPE_CHECKING:
    from ._executors.base import Executor
    from ._upstream import UpstreamLink

_log = get_logger("wantbuild.graph")

F = TypeVar("F", bound=Callable[..., Any])

_FINGERPRINT_FORMAT = "wantbuild.graph-fingerprint/1"


_FOUND_MAX = 1 << 16
"""At most this many refs are remembered by :meth:`Graph.job_of` (the refs of the work in flight: the supervisor
asks several times per partition while it plans and settles it). Not more: once eviction drops the states, this
dict would be the only holder of the ref strings (at 1 << 19, ~60 MB after a million-partition backfill)."""


def _is_executor(executor: object) -> bool:
    from ._executors.base import Executor

    return isinstance(executor, Executor)


class Graph:
    """The jobs of one build and the refs they produce; unambiguous by construction.

    ``default_collision_policy`` applies to jobs without their own (None: the runtime's default).
    """

    def __init__(self, name: str = "graph", *, default_collision_policy: CollisionPolicy | None = None,
                 default_executor: Executor | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise GraphError(f"a graph name must be a non-empty str, got {name!r}")
        if default_collision_policy is not None and default_collision_policy not in POLICIES:
            raise GraphError(
                f"graph {name!r}: default_collision_policy must be one of {', '.join(POLICIES)}, "
                f"got {default_collision_policy!r}"
            )
        if default_executor is not None and not _is_executor(default_executor):
            raise GraphError(
                f"graph {name!r}: default_executor must be an executor (DaskExecutor(...), RayExecutor(...), "
                f"LocalExecutor()), got {default_executor!r}"
            )
        self.name = name
        self.pools: dict[str, int] = {}
        """Concurrency pools shared by jobs (``pool = "warehouse"``): at most this many runs of their jobs at once."""
        self.schedules: dict[str, Any] = {}
        """Schedules declared with the graph (a graph file's ``[schedule.NAME]``): name -> ``Schedule``."""
        self.default_collision_policy = default_collision_policy
        self.default_executor = default_executor
        """Where jobs without an executor of their own run, unless the runtime is opened with one."""
        self._jobs: dict[str, Job] = {}
        # job_for() index: (number of "/" in a matching ref, its text before the first "/" when the pattern
        # fixes it, else None) -> candidates.
        self._index: dict[tuple[int, str | None], list[tuple[Pattern, Job]]] = {}
        self._found: dict[str, Job] = {}  # job_of's answers (the supervisor asks several times per partition);
        # dropped when a job is added, bounded by _FOUND_MAX or twice the refs in flight, whichever is larger
        self._in_flight = 0  # the refs the supervisor has wanted now (see in_flight)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self._jobs)} jobs>"

    # -- defining

    def job(
        self,
        name: str | None = None,
        *,
        outputs: str | Sequence[str],
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
        executor: Executor | Literal["local"] | None = None,
        resources: Mapping[str, float] | None = None,
        params: Mapping[str, object] | None = None,
        pool: str | None = None,
        rebuild_stale: bool = False,
    ) -> Callable[[F], F]:
        """Decorator: register a function as a job (named after the function unless ``name``).

        An async function runs anywhere; a plain function only on a cluster executor (``executor=``).
        """

        def register(run: F) -> F:
            job_name = name if name is not None else getattr(run, "__name__", None)
            if job_name is None:
                raise GraphError(f"cannot name the job for {run!r}; pass name=... to graph.job()")
            self.add_job(
                Job.create(
                    job_name,
                    outputs=outputs,
                    run=run,
                    deps=deps,
                    batch=batch,
                    concurrency=concurrency,
                    retries=retries,
                    backoff=backoff,
                    backoff_factor=backoff_factor,
                    max_backoff=max_backoff,
                    timeout=timeout,
                    heartbeat_timeout=heartbeat_timeout,
                    collision_policy=collision_policy,
                    executor=executor,
                    resources=resources,
                    params=params,
                    pool=pool,
                    rebuild_stale=rebuild_stale,
                )
            )
            return run

        return register

    def add_job(self, job: Job) -> Job:
        """Check ``job`` alone and against every job already here, then add it. The graph is unchanged on error."""
        if not isinstance(job, Job):
            raise GraphError(f"add_job() takes a Job, got {type(job).__name__}; use Job.create(...)")
        _check_job(job)
        existing = self._jobs.get(job.name)
        if existing is not None:
            raise GraphError(
                f"job {job.name!r} is defined twice (outputs {_texts(existing)} and {_texts(job)}); "
                f"give one of them another name"
            )
        for other in self._jobs.values():
            _check_disjoint(other, job)
        self._jobs[job.name] = job
        for pattern in job.outputs:
            self._index.setdefault((pattern._slashes, pattern._head), []).append((pattern, job))
        self._found.clear()
        _log.debug("graph.job_added", graph=self.name, job=job.name, outputs=[p.text for p in job.outputs])
        return job

    def upstream(self, name: str, *, db: str | os.PathLike[str], batch: int = 1000,
                 concurrency: int | None = None, link: UpstreamLink | None = None) -> Job:
        """Name another graph whose partitions this one's jobs may need: ``NAME:REF`` is partition ``REF`` of the
        graph whose log is ``db`` (a SQLite file or a ``postgresql://`` URL), served by its own runtime.

        Adds the job ``upstream.NAME`` that produces those refs by wanting them in that log and waiting for them
        (see ``docs/graphs.md``); ``batch`` refs per upstream want, ``concurrency`` upstream wants at once. ``link``
        reaches that graph another way than through its log (an :class:`UpstreamLink`; the scenario runner wires
        graphs' runtimes directly)."""
        from ._upstream import UpstreamRun, check_upstream_name, upstream_patterns

        try:
            check_upstream_name(name)
        except ValueError as e:
            raise GraphError(f"graph {self.name!r}: {e}") from None
        if not isinstance(db, str | os.PathLike) or not os.fspath(db):
            raise GraphError(f"graph {self.name!r}: upstream {name!r} needs db=, the log of that graph (a file or a "
                             f"postgresql:// URL), got {db!r}")
        return self.add_job(Job.create(f"upstream.{name}", outputs=upstream_patterns(name),
                                       run=UpstreamRun(name, os.fspath(db), self.name, link), batch=batch,
                                       concurrency=concurrency))

    def add_pool(self, name: str, size: int) -> None:
        """Declare a concurrency pool: at most ``size`` runs of the jobs with ``pool=name`` at once."""
        if not isinstance(name, str) or not _JOB_NAME_RE.fullmatch(name):
            raise GraphError(f"invalid pool name {name!r}: 1-128 characters, a letter or '_' first, then letters, "
                             f"digits, '_', '.' or '-'")
        if not _is_int(size) or size < 1:
            raise GraphError(f"pool {name!r}: its size must be an int >= 1 (runs at once), got {size!r}")
        self.pools[name] = size

    def pool_size(self, name: str) -> int:
        """The size of pool ``name``; :class:`GraphError` for a pool no ``add_pool`` declared."""
        try:
            return self.pools[name]
        except KeyError:
            hint = did_you_mean(name, self.pools)
            raise GraphError(f"pool {name!r} is not declared{'; ' + hint if hint else ''}; declare it with "
                             f"graph.add_pool({name!r}, SIZE) or [pools] {name} = SIZE in the graph file") from None

    def validate(self) -> None:
        """Check every job and every pair of jobs again (add_job already does this incrementally)."""
        jobs = list(self._jobs.values())
        for i, job in enumerate(jobs):
            _check_job(job)
            for other in jobs[:i]:
                _check_disjoint(other, job)
            if job.pool is not None and job.pool not in self.pools:
                self.pool_size(job.pool)

    # -- reading

    def jobs(self) -> Mapping[str, Job]:
        """A read-only view of the jobs by name, in the order they were added."""
        return MappingProxyType(self._jobs)

    def __getitem__(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            hint = did_you_mean(str(name), self._jobs)
            hint = f"; {hint}" if hint else ""
            known = ", ".join(map(repr, self._jobs)) or "none"
            raise UnknownJob(name, f"graph {self.name!r} has no job {name!r}{hint} (known jobs: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def job_for(self, ref: str) -> tuple[Job, Mapping[str, str]]:
        """The one job that produces ``ref`` and the params its pattern matched.

        Raises :class:`~actors._refs.InvalidRef` for an invalid ref and :class:`NoJobForRef` if no job
        produces it.
        """
        job = self.job_of(ref)
        params = job.params(ref)
        assert params is not None
        return job, params

    def forget_refs(self) -> None:
        """Drop :meth:`job_of`'s remembered answers (an evicting runtime does when a want ends: its refs are settled,
        and the strings the answers keep would hold memory the backfill freed)."""
        self._found = {}

    def job_of(self, ref: str) -> Job:
        """The one job that produces ``ref`` (remembered: the supervisor asks several times per partition).

        Raises :class:`~actors._refs.InvalidRef` for an invalid ref and :class:`NoJobForRef` if no job
        produces it.
        """
        found = self._found.get(ref)
        if found is not None:
            return found
        validate_ref(ref)
        slashes = ref.count("/")
        for key in ((slashes, ref.partition("/")[0]), (slashes, None)):
            for pattern, job in self._index.get(key, ()):
                params = pattern.match(ref)
                if params is not None:
                    problem = job.check_params(ref, params) if job.param_types else None
                    if problem is not None:
                        raise NoJobForRef(ref, f"no job of graph {self.name!r} produces {ref!r}: {problem}")
                    found_ = self._found
                    if len(found_) >= max(_FOUND_MAX, 2 * self._in_flight):  # the older half goes (insertion
                        # order): the newer is in flight
                        for old in list(itertools.islice(found_, len(found_) // 2)):
                            del found_[old]
                    self._found[ref] = job
                    return job
        patterns = [f"{job.name}: {', '.join(_texts(job))}" for job in self._jobs.values()]
        listing = "; ".join(patterns[:20]) + (f"; and {len(patterns) - 20} more jobs" if len(patterns) > 20 else "")
        raise NoJobForRef(
            ref,
            f"no job of graph {self.name!r} produces {ref!r}; want a ref that matches one of the jobs' "
            f"patterns ({listing or 'the graph has no jobs'})",
        )

    def in_flight(self, refs: int) -> None:
        """Say how many refs are wanted now (the runtime's supervisor does, as wants come and go): :meth:`job_of`
        remembers at least twice that many answers, so a list want larger than its bound does not ask again for
        every ref it has forgotten (at 100,000 partitions, nearly every one of its calls missed: ~3 us each)."""
        self._in_flight = refs

    @property
    def refs_in_flight(self) -> int:
        """What :meth:`in_flight` was last told."""
        return self._in_flight

    def static_deps(self, ref: str) -> tuple[str, ...]:
        """The static dependencies of ``ref`` (validated, duplicates dropped, in order); () without deps.

        Raises :class:`GraphError` naming the job if its deps function fails or returns something that is not
        a list of valid refs other than ``ref`` itself.
        """
        job = self.job_of(ref)
        if job.deps is None:
            return ()
        params = job.params(ref)
        assert params is not None
        try:
            found = job.deps(ref, params)
        except WantbuildError as e:
            raise GraphError(f"job {job.name!r}: computing the deps of {ref!r} failed: {e}") from e
        except Exception as e:
            raise GraphError(f"job {job.name!r}: its deps function raised {type(e).__name__} for {ref!r}: {e}") from e
        if isinstance(found, str | bytes) or not isinstance(found, Iterable):
            raise GraphError(
                f"job {job.name!r}: its deps function returned {found!r} for {ref!r}; return a list of refs"
            )
        deps: dict[str, None] = {}
        for dep in found:
            try:
                deps[validate_ref(dep)] = None
            except InvalidRef as e:
                raise GraphError(f"job {job.name!r}: a dependency of {ref!r} is invalid: {e}") from e
        if ref in deps:
            raise GraphError(f"job {job.name!r}: {ref!r} depends on itself; a partition cannot be built from itself")
        return tuple(deps)

    def fingerprint(self) -> str:
        """sha256 hex of a canonical description of the jobs; equal graphs give equal fingerprints anywhere."""
        jobs = [_describe(job) for job in sorted(self._jobs.values(), key=lambda job: job.name)]
        described: dict[str, Any] = {"format": _FINGERPRINT_FORMAT, "jobs": jobs}
        if self.pools:
            described["pools"] = self.pools
        text = json.dumps(described, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _texts(job: Job) -> list[str]:
    return [pattern.text for pattern in job.outputs]


def _check_disjoint(first: Job, second: Job) -> None:
    for mine in first.outputs:
        for theirs in second.outputs:
            witness = mine.common_ref(theirs)
            if witness is not None:
                raise GraphError(
                    f"jobs {first.name!r} ({mine.text}) and {second.name!r} ({theirs.text}) can both produce "
                    f"{witness!r}; exactly one job may produce a ref: make the patterns disjoint (e.g. a "
                    f"distinct literal prefix) or merge the jobs"
                )


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


def _describe(job: Job) -> dict[str, Any]:
    if isinstance(job.deps, TemplateDeps):
        deps: Any = {"templates": [template.text for template in job.deps.templates]}
    else:
        deps = None if job.deps is None else "function"
    command = job.declared_command if job.declared_command is not None else job.command
    return {
        "name": job.name,
        "outputs": sorted(pattern.text for pattern in job.outputs),
        "deps": deps,
        "batch": job.batch,
        "concurrency": job.concurrency,
        "retry": {
            "max_attempts": job.retry.max_attempts,
            "backoff": float(job.retry.backoff),
            "factor": float(job.retry.factor),
            "max_backoff": float(job.retry.max_backoff),
        },
        "timeout": _seconds(job.timeout),
        "heartbeat_timeout": _seconds(job.heartbeat_timeout),
        "kind": "run" if job.run is not None else "command",
        "command": list(command) if command is not None else None,
        # Added with issue 16, only when set, so graphs without them keep their fingerprints.
        **({"params": {name: kind.to_json() for name, kind in sorted(job.param_types.items())}}
           if job.param_types else {}),
        **({"pool": job.pool} if job.pool is not None else {}),
    }
