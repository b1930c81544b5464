"""Exploration: random timelines over a scenario's graph, checked, and the failures shrunk by hypothesis.

:func:`explore` takes a scenario (or a graph file, whose jobs become simulated jobs that succeed) and lets
hypothesis generate timelines of overlapping wants, cancels, taints, kills and crashes at random virtual
times (with ``faults``, injected faults too: failed commits, crashing handlers, ask timeouts, lost
notifications, failing hooks and execution tasks). Each timeline runs as a scenario checked for the
invariants (and ``all_terminal``), plus, for a base
without a timeline of its own or when asked, the base's scenario-wide bounds on metrics, run statuses and
event counts (per-want and per-partition expectations are dropped: the wants are new). The first timeline
that fails is shrunk by hypothesis to a minimal one, which is written out as a scenario file and run again
to confirm that it reproduces the failure.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors import POLICIES
from eventlog import get_logger

from ._dumper import dump_scenario
from ._model import Bound, Expectations, JobSpec, Scenario, Step
from ._parser import ScenarioError, load_scenario, parse_scenario
from ._result import ScenarioResult
from ._runner import CheckerFactory, run_scenario
from ._sim import fill

log = get_logger("wantbuild.scenarios")

__all__ = ["ExploreResult", "explore", "load_explore_target", "ref_universe"]

_SLOT_RE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
_CRASH_EVENTS = (None, "PartitionBuilding", "JobRunStarted", "PartitionLive", "JobRunSucceeded")
_GRAPH_JOB_FIELDS = ("outputs", "deps", "batch", "concurrency", "retries", "backoff", "backoff_factor",
                     "max_backoff", "timeout", "heartbeat_timeout", "collision_policy")


@dataclass
class ExploreResult:
    base: Scenario
    examples: int
    failure: ScenarioResult | None = None
    minimal: Scenario | None = None
    written: Path | None = None
    reproduced: bool | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def load_explore_target(path: str | Path) -> Scenario:
    """A scenario file, or a wantbuild graph file (``[job.X]`` with ``command``/``function``) turned into one."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError("no such file", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"cannot read it: {e}", path=str(p)) from None
    except tomllib.TOMLDecodeError:
        return load_scenario(p)  # reports the TOML error with its line
    jobs = data.get("job")
    is_graph = "graph" in data or (isinstance(jobs, dict) and any(
        isinstance(j, dict) and ("command" in j or "function" in j) for j in jobs.values()))
    if not is_graph:
        return load_scenario(p)
    graph = data.get("graph", {}) if isinstance(data.get("graph"), dict) else {}
    policy = graph.get("default_collision_policy", "shrink")
    lines = ["[scenario]", f"name = {_q(str(graph.get('name', p.stem)))}",
             f"description = {_q('jobs of the graph file ' + p.name + ', simulated: each succeeds after 60 s')}",
             f"policy = {_q(policy if policy in POLICIES else 'shrink')}"]
    for name, job in (jobs or {}).items():
        if not isinstance(job, dict):
            continue
        lines.append(f"[job.{_q(name)}]")
        for key in _GRAPH_JOB_FIELDS:
            if key in job:
                lines.append(f"{key} = {_toml_value(job[key])}")
    return parse_scenario("\n".join(lines) + "\n", str(p))


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def ref_universe(sc: Scenario, *, default_values: tuple[str, ...] = ("1", "2", "3")) -> list[str]:
    """The refs random wants pick from: the timeline's refs, else every output pattern filled with the
    ``[explore.params]`` values (or ``1``, ``2``, ``3``)."""
    refs: dict[str, None] = dict.fromkeys(r for s in sc.timeline for r in s.refs)
    if sc.explore_params or not refs:
        for job in sc.jobs:
            for pattern in job.outputs:
                names = list(dict.fromkeys(_SLOT_RE.findall(pattern)))
                choices = [sc.explore_params.get(n, default_values) for n in names]
                for combo in itertools.product(*choices):
                    refs[fill(pattern, dict(zip(names, combo, strict=True)))] = None
    return list(refs)


def _job_span(jobs: tuple[JobSpec, ...]) -> int:
    longest = max((j.duration + j.per_partition * j.batch for j in jobs), default=60.0)
    return int(max(60.0, 4 * longest))


def fault_choices(base: Scenario) -> list[tuple[str, str | None, str | None]]:
    """Every (point, kind, match) a random fault step may pick for ``base``'s graph."""
    from actors import MESSAGES
    from supervisor._supervisor import SUPERVISOR_MESSAGES

    events = {
        "want": ("WantCreated", "WantBuilding", "WantUpstreamBuilding", "WantSucceeded", "WantCanceled"),
        "partition": ("PartitionBuilding", "PartitionLive", "PartitionUpstreamWaiting", "PartitionMissing",
                      "PartitionFailed", "PartitionTainted"),
        "job_run": ("JobRunQueued", "JobRunStarted", "JobRunSucceeded", "JobRunFailed", "JobRunDepMiss",
                    "JobRunCanceled", "JobRunLost"),
    }
    out: list[tuple[str, str | None, str | None]] = []
    for kind, names in events.items():
        out += [("commit", kind, e) for e in names]
        out += [("notify", kind, e) for e in names]
    for kind, msgs in {**MESSAGES, "supervisor": SUPERVISOR_MESSAGES}.items():
        out += [("handler", kind, m) for m in msgs if m != "GetState"]
    out += [("ask_timeout", "partition", m) for m in ("RequestLease", "SettleBuild", "ReleaseLease")]
    out += [("ask_timeout", "want", "CreateWant"), ("hook", None, None)]
    out += [("job", j.name, None) for j in base.jobs]
    return out


def _timeline(raw: list[tuple[Any, ...]], refs: list[str]) -> tuple[Step, ...]:
    """Hypothesis's draws as valid steps: in time order, want names w1.., cancels of earlier wants only."""
    ordered = sorted(enumerate(raw), key=lambda item: (item[1][1], item[0]))
    steps: list[Step] = []
    wants: list[str] = []
    crashes = 0
    for _, item in ordered:
        kind, at = item[0], float(item[1])
        i = len(steps)
        if kind == "want":
            name = f"w{len(wants) + 1}"
            wants.append(name)
            steps.append(Step(at=at, action="want", index=i, name=name, refs=tuple(item[2])))
        elif kind == "cancel" and wants:
            # min(), not %: shrinking the index towards 0 and dropping later wants keep it on the same want
            steps.append(Step(at=at, action="cancel", index=i, want=wants[min(item[2], len(wants) - 1)]))
        elif kind == "taint":
            steps.append(Step(at=at, action="taint", index=i, refs=tuple(item[2])))
        elif kind == "crash" and crashes < 2:
            crashes += 1
            steps.append(Step(at=at, action="crash", index=i, after_event=item[2]))
        elif kind == "kill":
            steps.append(Step(at=at, action="kill", index=i, ref=item[2]))
        elif kind == "fault":
            (point, fkind, match), skip, times = item[2]
            steps.append(Step(at=at, action="fault", index=i, point=point, kind=fkind, match=match, skip=skip,
                              times=times))
    return tuple(steps)


def _scenario_for(base: Scenario, steps: tuple[Step, ...], use_expectations: bool) -> Scenario:
    e = base.expect
    if use_expectations:
        expect = Expectations(invariants=True, all_terminal=e.all_terminal, metrics=e.metrics, runs=e.runs,
                              events=e.events)
    else:
        expect = Expectations(invariants=True, all_terminal=e.all_terminal)
    if any(s.action == "fault" for s in steps) and "gave_up" not in expect.metrics:
        # Giving up on an actor that kept crashing is a correct outcome under faults (its wants end Failed
        # with the reason); what must hold is that every want ends and the invariants stay true.
        expect = dataclasses.replace(expect, metrics={**expect.metrics, "gave_up": Bound(0, None)})
    return dataclasses.replace(base, name=f"{base.name}-explore", timeline=steps, expect=expect,
                               description=f"a timeline generated by `wantbuild scenario explore` from {base.name}",
                               path=None)


def _why(r: ScenarioResult) -> str:
    if r.violations:
        return str(r.violations[0])
    bad = r.failed_checks
    if bad:
        c = bad[0]
        return f"expectation {c.name}: expected {c.expected}, got {c.actual}"
    return r.stopped or "failed"


def explore(base: Scenario, *, runs: int = 50, seed: int = 0, out_dir: str | Path | None = None,
            checker_factory: CheckerFactory | None = None, max_steps: int = 8,
            use_expectations: bool | None = None,
            progress: Callable[[int, ScenarioResult], None] | None = None,
            faults: bool = False) -> ExploreResult:
    """Run up to ``runs`` random timelines over ``base``'s graph; shrink and write out the first failure.

    Every timeline is checked for the invariants (and ``all_terminal`` as ``base`` says). ``use_expectations``
    adds ``base``'s scenario-wide bounds (metrics, runs, events); by default only when ``base`` has no
    timeline of its own, since bounds written for one timeline rarely hold for others.
    """
    if base.graphs:
        raise ScenarioError("explore runs one graph; this scenario has several ([graphs.NAME] tables): explore "
                            "each graph's jobs in a one-graph scenario, or run this one with `scenario run`",
                            path=base.path)
    if use_expectations is None:
        use_expectations = not base.timeline
    try:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hseed
        from hypothesis import strategies as st
    except ImportError:  # pragma: no cover - hypothesis comes with the dev extra
        raise ScenarioError("explore needs hypothesis; install it with: pip install hypothesis") from None

    refs = ref_universe(base)
    if not refs:
        raise ScenarioError("nothing to explore: no refs (add [explore.params] values for the patterns' "
                            "placeholders)", path=base.path)
    span = min(_job_span(base.jobs), int(base.horizon))  # a step past the horizon could never run
    at = st.integers(min_value=0, max_value=span)
    pick = st.lists(st.sampled_from(refs), min_size=1, max_size=3, unique=True)
    step = st.one_of(
        st.tuples(st.just("want"), at, pick),
        st.tuples(st.just("cancel"), at, st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("taint"), at, st.lists(st.sampled_from(refs), min_size=1, max_size=2, unique=True)),
        st.tuples(st.just("crash"), at, st.sampled_from(_CRASH_EVENTS)),
        st.tuples(st.just("kill"), at, st.sampled_from(refs)),
    )
    if faults:
        fault = st.tuples(st.sampled_from(fault_choices(base)), st.integers(min_value=0, max_value=3),
                          st.integers(min_value=1, max_value=6))
        step = st.one_of(step, st.tuples(st.just("fault"), at, fault))
    result = ExploreResult(base=base, examples=0)
    failures: list[tuple[Scenario, ScenarioResult]] = []

    @settings(max_examples=runs, database=None, deadline=None, verbosity=Verbosity.quiet,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @hseed(seed)
    @given(st.lists(step, min_size=1, max_size=max_steps))
    def prop(raw: list[tuple[Any, ...]]) -> None:
        sc = _scenario_for(base, _timeline(raw, refs), use_expectations)
        r = run_scenario(sc, checker_factory=checker_factory)
        result.examples += 1
        if progress is not None:
            progress(result.examples, r)
        if not r.ok:
            failures.append((sc, r))
            raise AssertionError(_why(r))

    try:
        prop()
    except AssertionError:
        if not failures:
            raise
    if not failures:
        return result
    minimal, failure = failures[-1]
    result.minimal, result.failure = minimal, failure
    log.info("explore found a failure", scenario=base.name, examples=result.examples, steps=len(minimal.timeline),
             why=_why(failure))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{base.name}-explore-seed{seed}.toml"
        header = (f"Found by `wantbuild scenario explore` (seed {seed}) after {result.examples} runs, shrunk to "
                  f"{len(minimal.timeline)} step(s).\nIt fails: {_why(failure)}\n"
                  f"Reproduce: wantbuild scenario run {path.name}")
        path.write_text(dump_scenario(minimal, header=header), encoding="utf-8")
        result.written = path
        again = run_scenario(load_scenario(path), checker_factory=checker_factory)
        result.reproduced = not again.ok and _why(again) == _why(failure)
    return result
