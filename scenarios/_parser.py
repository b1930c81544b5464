"""Reading a scenario file: TOML to a checked :class:`~scenarios._model.Scenario`, or a :class:`ScenarioError`.

Every error is a :class:`ScenarioError` whose message starts with ``FILE:LINE:`` and names the key
(``timeline[2].refs``). ``tomllib`` reports no line numbers for keys, so the line is found by scanning the
text for the key under its table header (:class:`Locator`): good enough to point at the right line in any file
we write.

The checks come in two passes: :class:`_Parser` checks each table alone (types, names, fields that go
together); then, unless ``check_graph=False``, the real graph is built and every ref, template and name of the
scenario is checked against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from actors import POLICIES, InvalidRef, validate_ref
from eventlog import WantbuildError
from supervisor import CATCH_UP, GraphError, NoJobForRef, Schedule, valid_choices
from supervisor._graph_toml import toml_type

from ._model import (
    _STEP_FIELDS,
    ACTIONS,
    BEHAVIOURS,
    DEFAULT_HORIZON,
    DEFAULT_LEASE_TTL,
    EVENT_TYPES,
    METRICS,
    PARTITION_STATUSES,
    RUN_STATUSES,
    WANT_STATUSES,
    Attempt,
    Bound,
    Expectations,
    GraphSpec,
    JobSpec,
    PartitionExpect,
    Scenario,
    Step,
    WantExpect,
    _num,
)
from ._sim import build_graph

__all__ = ["ScenarioError", "load_scenario", "parse_scenario"]


class ScenarioError(WantbuildError, ValueError):
    """A scenario file that cannot be used. The message starts with ``FILE:LINE:`` and names the key."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")


# --------------------------------------------------------------------------------------------------------
# Finding a key's line


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]#]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_PART = r"""(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_PART_RE = re.compile(r"""\s*([A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')\s*(?:\.|$)""")

KeyPath: TypeAlias = tuple[str | int, ...]


def _split_key(text: str) -> list[str]:
    parts = []
    for m in _PART_RE.finditer(text):
        raw = m.group(1)
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = raw[1:-1]
        elif raw.startswith("'"):
            raw = raw[1:-1]
        parts.append(raw)
    return parts


class Locator:
    """Maps key paths such as ``("timeline", 2, "refs")`` to 1-based line numbers by scanning the text."""

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        counters: dict[tuple[str, ...], int] = {}
        table: KeyPath = ()
        for no, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            hm = _HEADER_RE.match(line)
            if hm and not _KEY_RE.match(line):
                names = tuple(_split_key(hm.group(2)))
                if hm.group(1) == "[[":
                    idx = counters.get(names, 0)
                    counters[names] = idx + 1
                    table = (*names, idx)
                else:
                    table = self._resolve(names, counters)
                for n in range(1, len(table) + 1):  # [a.b.c] also places a and a.b, if nothing else did first
                    self.lines.setdefault(table[:n], no)
                continue
            km = _KEY_RE.match(line)
            if km:
                path = (*table, *_split_key(km.group(1)))
                self.lines.setdefault(path, no)

    @staticmethod
    def _resolve(names: tuple[str, ...], counters: Mapping[tuple[str, ...], int]) -> KeyPath:
        """``[timeline.x]`` after ``[[timeline]]`` belongs to the last timeline entry."""
        out: list[str | int] = []
        for i, name in enumerate(names):
            out.append(name)
            n = counters.get(names[: i + 1])
            if n:
                out.append(n - 1)
        return tuple(out)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, else of its longest known prefix."""
        for n in range(len(path), 0, -1):
            found = self.lines.get(path[:n])
            if found is not None:
                return found
        return None


def _key_text(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_\-]+", part) else json.dumps(part)
            out += ("." if out else "") + text
    return out


# --------------------------------------------------------------------------------------------------------
# Parsing


_SCENARIO_FIELDS = ("name", "description", "seed", "policy", "horizon")
_JOB_FIELDS = (
    "outputs", "deps", "batch", "concurrency", "retries", "backoff", "backoff_factor", "max_backoff", "timeout",
    "heartbeat_timeout", "collision_policy", "duration", "per_partition", "behaviour", "times", "rate", "missing",
    "only", "heartbeat", "params", "pool", "script", "bad_partitions", "bad_times",
)
_ENTITY_KINDS = ("want", "partition", "job_run", "taint")
_EXPECT_FIELDS = ("invariants", "all_terminal", *METRICS, "runs", "events", "wants", "partitions")
_TOP = ("scenario", "job", "timeline", "expect", "explore", "pools", "schedule", "graphs")
_GRAPH_FIELDS = ("upstream", "job")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Parser:
    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path
        self.loc = Locator(text)

    def error(self, key: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(message, path=self.path or "<scenario>", line=self.loc.line(key),
                             key=_key_text(key) if key else None)

    # -- typed getters ---------------------------------------------------------------------------------
    def get(self, table: Mapping[str, Any], key: KeyPath, check: Callable[[Any], bool], want: str,
            default: Any = None) -> Any:
        name = key[-1]
        assert isinstance(name, str)
        if name not in table:
            return default
        value = table[name]
        if not check(value):
            raise self.error(key, f"must be {want}, got {toml_type(value)} ({value!r})")
        return value

    def number(self, table: Mapping[str, Any], key: KeyPath, *, default: float | None = None, low: float = 0.0,
               strict: bool = False) -> float | None:
        want = f"a number {'>' if strict else '>='} {_num(low)}"
        value = self.get(table, key, lambda v: _is_num(v) and (v > low if strict else v >= low), want)
        return default if value is None else float(value)

    def integer(self, table: Mapping[str, Any], key: KeyPath, *, default: int | None = None,
                low: int = 0) -> int | None:
        value = self.get(table, key, lambda v: _is_int(v) and v >= low, f"an integer >= {low}")
        return default if value is None else int(value)

    def string(self, table: Mapping[str, Any], key: KeyPath, *, default: str | None = None,
               choices: Sequence[str] | None = None) -> str | None:
        if choices is not None:
            value = table.get(str(key[-1]))
            if value is not None and value not in choices:
                hint = valid_choices(str(value), choices) if isinstance(value, str) else f"valid: {', '.join(choices)}"
                raise self.error(key, f"{value!r} is not allowed; {hint}")
        value = self.get(table, key, lambda v: isinstance(v, str), "a string")
        return default if value is None else str(value)

    def strings(self, table: Mapping[str, Any], key: KeyPath, *, one_ok: bool = True,
                nonempty: bool = False) -> tuple[str, ...]:
        want = "a string or an array of strings" if one_ok else "an array of strings"
        value = self.get(
            table, key,
            lambda v: (one_ok and isinstance(v, str)) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
            want,
        )
        if value is None:
            return ()
        out = (value,) if isinstance(value, str) else tuple(value)
        if nonempty and not out:
            raise self.error(key, "must not be empty")
        return out

    def check_keys(self, table: Mapping[str, Any], key: KeyPath, valid: Sequence[str], what: str) -> None:
        for name in table:
            if name not in valid:
                raise self.error((*key, name), f"unknown field in {what}; {valid_choices(name, valid)}")

    def table(self, parent: Mapping[str, Any], key: KeyPath) -> dict[str, Any]:
        value = parent.get(str(key[-1]), {})
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, got {toml_type(value)}")
        return value

    def bound(self, value: object, key: KeyPath) -> Bound:
        if _is_num(value):
            assert isinstance(value, int | float)
            return Bound.exactly(float(value))
        if isinstance(value, dict):
            self.check_keys(value, key, ("min", "max"), "a bound")
            lo = self.get(value, (*key, "min"), _is_num, "a number")
            hi = self.get(value, (*key, "max"), _is_num, "a number")
            if lo is None and hi is None:
                raise self.error(key, "a bound needs min, max or both, e.g. { max = 3 }")
            if lo is not None and hi is not None and lo > hi:
                raise self.error(key, f"min ({lo}) is greater than max ({hi})")
            return Bound(None if lo is None else float(lo), None if hi is None else float(hi))
        raise self.error(key, f"must be a number (exactly) or a table {{ min = ..., max = ... }}, "
                              f"got {toml_type(value)} ({value!r})")

    # -- sections --------------------------------------------------------------------------------------
    def parse(self) -> Scenario:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"line (\d+)", str(e))
            raise ScenarioError(f"not valid TOML: {e}", path=self.path or "<scenario>",
                                line=int(m.group(1)) if m else None) from None
        for key in data:
            if key not in _TOP:
                raise self.error((key,), f"unknown top-level key; {valid_choices(key, _TOP)}")
        head = self.table(data, ("scenario",))
        self.check_keys(head, ("scenario",), _SCENARIO_FIELDS, "[scenario]")
        stem = Path(self.path).stem if self.path else "scenario"
        name = self.string(head, ("scenario", "name"), default=stem)
        assert name is not None
        if not _NAME_RE.fullmatch(name):
            raise self.error(("scenario", "name"), f"{name!r} is not a usable name: letters, digits, '_', '.' "
                                                    f"and '-', at most 128 characters")
        graphs = self.graphs(data)
        jobs = self.jobs(data) if not graphs else ()
        job_names = {j.name for j in jobs} | {j.name for g in graphs for j in g.jobs}
        horizon = self.number(head, ("scenario", "horizon"), default=DEFAULT_HORIZON, strict=True) or DEFAULT_HORIZON
        timeline = self.timeline(data, job_names, horizon)
        if graphs:
            self.graph_steps(timeline, graphs)
        elif any(s.graph is not None for s in timeline):
            step = next(s for s in timeline if s.graph is not None)
            raise self.error(("timeline", step.index, "graph"), "only a scenario of several graphs ([graphs.NAME] "
                                                                 "tables) names the graph of a step; remove it")
        expect = self.expect(data, timeline)
        explore = self.explore(data)
        pools = self.table(data, ("pools",))
        for pool in pools:
            self.get(pools, ("pools", pool), lambda v: _is_int(v) and v >= 1, "an integer >= 1 (runs at once)")
        schedules = tuple(self.schedule(name, t) for name, t in self.table(data, ("schedule",)).items())
        return Scenario(
            pools=dict(pools),
            schedules=schedules,
            name=name,
            description=self.string(head, ("scenario", "description"), default="") or "",
            seed=self.integer(head, ("scenario", "seed"), default=0) or 0,
            policy=self.string(head, ("scenario", "policy"), default="shrink", choices=POLICIES),  # type: ignore[arg-type]
            horizon=horizon,
            jobs=jobs,
            timeline=timeline,
            expect=expect,
            explore_params=explore,
            graphs=graphs,
            path=self.path,
        )

    def graphs(self, data: Mapping[str, Any]) -> tuple[GraphSpec, ...]:
        """``[graphs.NAME]`` tables: names, upstream graphs (declared, no cycle), jobs; and what they exclude."""
        from supervisor._upstream import check_upstream_name

        tables = self.table(data, ("graphs",))
        if "graphs" not in data:
            return ()
        if not tables:
            raise self.error(("graphs",), "declares no graph; add [graphs.NAME] tables with [graphs.NAME.job.JOB]")
        for top in ("job", "pools", "schedule", "explore"):
            if top in data:
                what = ("its jobs go under [graphs.NAME.job.JOB]" if top == "job" else
                        f"[{top}] is not supported in a scenario of several graphs yet; remove it")
                raise self.error((top,), f"this scenario has [graphs.NAME] tables: {what}")
        out = []
        for name, t in tables.items():
            key: KeyPath = ("graphs", name)
            if not isinstance(t, dict):
                raise self.error(key, f"must be a table ([graphs.{name}]), got {toml_type(t)}")
            try:
                check_upstream_name(name)
            except ValueError as e:
                raise self.error(key, str(e).replace("upstream graph name", "graph name")) from None
            self.check_keys(t, key, _GRAPH_FIELDS, f"[graphs.{name}]")
            if not self.table(t, (*key, "job")):
                raise self.error(key, f"graph {name!r} defines no jobs; add a [graphs.{name}.job.NAME] table with "
                                      f"outputs = ...")
            jobs = []
            for jname, jt in self.table(t, (*key, "job")).items():
                jkey: KeyPath = (*key, "job", jname)
                if not isinstance(jt, dict):
                    raise self.error(jkey, f"must be a table ([graphs.{name}.job.{jname}]), got {toml_type(jt)}")
                jobs.append(self.job(jname, jt, jkey))
            ups = self.strings(t, (*key, "upstream"))
            out.append(GraphSpec(name, tuple(jobs), ups, self.loc.line(key)))
        names = [g.name for g in out]
        for g in out:
            for up in g.upstream:
                if up == g.name:
                    raise self.error(("graphs", g.name, "upstream"), f"graph {g.name!r} names itself as upstream; its "
                                                                     f"own partitions need no prefix")
                if up not in names:
                    raise self.error(("graphs", g.name, "upstream"), f"no graph named {up!r} in this scenario; "
                                                                     f"{valid_choices(up, names)}")
        cycle = _graph_cycle({g.name: g.upstream for g in out})
        if cycle:
            raise self.error(("graphs", cycle[0], "upstream"), f"the graphs depend on each other in a cycle: "
                                                                f"{' -> '.join(cycle)} (each reads the next one's "
                                                                f"partitions); break it")
        return tuple(out)

    def graph_steps(self, timeline: Sequence[Step], graphs: Sequence[GraphSpec]) -> None:
        """In a scenario of several graphs every step names a declared graph, and acts within it."""
        names = [g.name for g in graphs]
        jobs = {g.name: {j.name for j in g.jobs} for g in graphs}
        want_graph: dict[str, str] = {}
        taint_graph: dict[str, str] = {}
        for s in timeline:
            key: KeyPath = ("timeline", s.index)
            if s.action in ("crash", "stall"):
                raise self.error((*key, "action"), f"a {s.action} step is not supported in a scenario of several "
                                                   f"graphs yet (see docs/scenarios.md); run it in a one-graph "
                                                   f"scenario")
            if s.graph is None:
                raise self.error(key, f"in a scenario of several graphs every step names its graph; add graph = "
                                      f"\"NAME\" ({', '.join(names)})")
            if s.graph not in names:
                raise self.error((*key, "graph"), f"no graph named {s.graph!r}; {valid_choices(s.graph, names)}")
            if s.action == "want" and s.name is not None:
                want_graph[s.name] = s.graph
            if s.action == "taint" and s.name is not None:
                taint_graph[s.name] = s.graph
            named = (want_graph.get(s.want or "") if s.want is not None else
                     taint_graph.get(s.taint or "") if s.taint is not None else None)
            if s.action == "cancel" and named is not None and named != s.graph:
                which = "want" if s.want is not None else "taint"
                raise self.error((*key, "graph"), f"the {which} {s.want or s.taint!r} is in graph {named!r}, not "
                                                  f"{s.graph!r}; a cancel acts in the graph of what it cancels")
            job = s.job if s.action == "kill" else s.kind if s.action == "fault" and s.point == "job" else None
            if job is not None and job not in jobs[s.graph]:
                field_ = "job" if s.action == "kill" else "kind"
                raise self.error((*key, field_), f"graph {s.graph!r} has no job named {job!r}; "
                                                 f"{valid_choices(job, sorted(jobs[s.graph]))}")

    def jobs(self, data: Mapping[str, Any]) -> tuple[JobSpec, ...]:
        jobs = self.table(data, ("job",))
        if not jobs:
            raise self.error(("job",), "the scenario defines no jobs; add a [job.NAME] table with outputs = ...")
        out = []
        for name, table in jobs.items():
            key: KeyPath = ("job", name)
            if not isinstance(table, dict):
                raise self.error(key, f"must be a table ([job.{name}]), got {toml_type(table)}")
            out.append(self.job(name, table, key))
        return tuple(out)

    def job(self, name: str, t: dict[str, Any], key: KeyPath) -> JobSpec:
        self.check_keys(t, key, _JOB_FIELDS, f"[job.{name}]")
        if "outputs" not in t:
            raise self.error(key, f"missing field 'outputs'; add e.g. outputs = \"{name}/{{date}}\"")
        behaviour = self.string(t, (*key, "behaviour"), default="succeed", choices=BEHAVIOURS)
        rate = self.number(t, (*key, "rate"), default=0.0) or 0.0
        if rate > 1:
            raise self.error((*key, "rate"), f"is a probability between 0 and 1, got {rate}")
        if behaviour == "flaky" and "rate" not in t:
            raise self.error((*key, "behaviour"), "a flaky job needs a rate (probability that a run fails), "
                                                  "e.g. rate = 0.3")
        missing = self.strings(t, (*key, "missing"))
        if behaviour == "missing_deps" and not missing:
            raise self.error((*key, "behaviour"), "a missing_deps job needs missing = [templates], "
                                                  "e.g. missing = [\"raw/{date}\"]")
        for fld, allowed in (("rate", ("flaky",)), ("missing", ("missing_deps",)), ("times", ("fail", "hang"))):
            if fld in t and behaviour not in allowed:
                raise self.error((*key, fld), f"only applies to behaviour {' or '.join(allowed)} "
                                              f"(this job's behaviour is {behaviour})")
        return JobSpec(
            name=name,
            outputs=self.strings(t, (*key, "outputs"), nonempty=True),
            deps=self.strings(t, (*key, "deps")),
            batch=self.integer(t, (*key, "batch"), default=1, low=1) or 1,
            concurrency=self.integer(t, (*key, "concurrency"), low=1),
            retries=self.integer(t, (*key, "retries"), default=0) or 0,
            backoff=self.number(t, (*key, "backoff"), default=1.0) or 0.0,
            backoff_factor=self.number(t, (*key, "backoff_factor"), default=2.0, low=1.0) or 1.0,
            max_backoff=self.number(t, (*key, "max_backoff"), default=300.0) or 0.0,
            timeout=self.number(t, (*key, "timeout"), strict=True),
            heartbeat_timeout=self.number(t, (*key, "heartbeat_timeout"), strict=True),
            collision_policy=self.string(t, (*key, "collision_policy"), choices=POLICIES),  # type: ignore[arg-type]
            duration=self.number(t, (*key, "duration"), default=60.0) or 0.0,
            per_partition=self.number(t, (*key, "per_partition"), default=0.0) or 0.0,
            behaviour=behaviour,  # type: ignore[arg-type]
            times=self.integer(t, (*key, "times"), low=1),
            rate=rate,
            missing=missing,
            only=self.strings(t, (*key, "only")),
            heartbeat=self.number(t, (*key, "heartbeat"), strict=True),
            params=self.params(t, (*key, "params")),
            pool=self.string(t, (*key, "pool")),
            script=self.script(t, (*key, "script")),
            bad_partitions=self.strings(t, (*key, "bad_partitions")),
            bad_times=self.integer(t, (*key, "bad_times"), low=1),
            line=self.loc.line(key),
        )

    def params(self, t: Mapping[str, Any], key: KeyPath) -> dict[str, str | tuple[str, ...]]:
        table = self.table(t, key)
        out: dict[str, str | tuple[str, ...]] = {}
        for name, value in table.items():
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[name] = tuple(value)
            elif isinstance(value, str):
                out[name] = value
            else:
                raise self.error((*key, name), f'must be a type ("date", "hour", "int") or an array of values, got '
                                               f"{toml_type(value)} ({value!r})")
        return out

    def script(self, t: Mapping[str, Any], key: KeyPath) -> dict[str, tuple[Attempt, ...]]:
        out: dict[str, tuple[Attempt, ...]] = {}
        for ref, attempts in self.table(t, key).items():
            if not isinstance(attempts, list) or not attempts or not all(isinstance(a, dict) for a in attempts):
                raise self.error((*key, ref), "must be an array of { duration = ..., outcome = ... } tables")
            steps = []
            for a in attempts:
                self.check_keys(a, (*key, ref), ("duration", "outcome", "missing"), "a scripted build")
                outcome = a.get("outcome", "succeed")
                if outcome not in ("succeed", "fail", "missing_deps", "hang"):
                    raise self.error((*key, ref), f"outcome {outcome!r} is not succeed, fail, missing_deps or hang")
                duration = a.get("duration", 0.0)
                if not _is_num(duration) or duration < 0:
                    raise self.error((*key, ref), f"duration must be a number >= 0, got {duration!r}")
                missing = a.get("missing", [])
                if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
                    raise self.error((*key, ref), "missing must be an array of refs")
                steps.append(Attempt(float(duration), outcome, tuple(missing)))
            out[ref] = tuple(steps)
        return out

    def schedule(self, name: str, t: object) -> Schedule:
        key: KeyPath = ("schedule", name)
        if not isinstance(t, dict):
            raise self.error(key, f"must be a table ([schedule.{name}]), got {toml_type(t)}")
        fields = ("cron", "want", "timezone", "catch_up", "priority", "ttl", "sla", "grace")
        self.check_keys(t, key, fields, f"[schedule.{name}]")
        for needed in ("cron", "want"):
            if needed not in t:
                raise self.error(key, f"missing field {needed!r}; e.g. cron = \"0 2 * * *\", "
                                      f"want = \"daily/{{date:yesterday}}\"")
        return Schedule(
            name=name, cron=self.string(t, (*key, "cron")) or "", want=self.string(t, (*key, "want")) or "",
            timezone=self.string(t, (*key, "timezone"), default="UTC") or "UTC",
            catch_up=self.string(t, (*key, "catch_up"), default="all", choices=CATCH_UP) or "all",  # type: ignore[arg-type]
            priority=int(self.get(t, (*key, "priority"), _is_int, "an integer", 0)),
            ttl=self.number(t, (*key, "ttl"), strict=True), sla=self.number(t, (*key, "sla"), strict=True),
            grace=self.number(t, (*key, "grace"), default=60.0) or 0.0,
        )

    def timeline(self, data: Mapping[str, Any], job_names: set[str], horizon: float) -> tuple[Step, ...]:
        raw = data.get("timeline", [])
        if not isinstance(raw, list):
            raise self.error(("timeline",), f"must be an array of tables ([[timeline]] entries), got {toml_type(raw)}")
        steps: list[Step] = []
        names: set[str] = set()
        taint_names: set[str] = set()
        for i, t in enumerate(raw):
            key: KeyPath = ("timeline", i)
            if not isinstance(t, dict):
                raise self.error(key, f"must be a table, got {toml_type(t)}")
            if "action" not in t:
                raise self.error(key, f"missing field 'action'; one of {', '.join(ACTIONS)}")
            action = self.string(t, (*key, "action"), choices=ACTIONS)
            assert action is not None
            self.check_keys(t, key, _STEP_FIELDS[action], f"a {action} step")
            if "at" not in t:
                raise self.error(key, "missing field 'at' (virtual seconds since the start)")
            at = self.number(t, (*key, "at"))
            assert at is not None
            if at > horizon:  # the run stops at the horizon: this step could never happen
                which = "the default horizon" if horizon == DEFAULT_HORIZON else "its [scenario] horizon"
                raise self.error((*key, "at"), f"{_num(at)} is past the scenario's end, {which} of {_num(horizon)} "
                                               f"s, so this step would never run; move it earlier or raise "
                                               f"[scenario] horizon")
            ev = self.string(t, (*key, "after_event"), choices=EVENT_TYPES)
            if "entity" in t and ev is None:
                raise self.error((*key, "entity"), "only applies together with after_event")
            step = Step(at=at, action=action, index=i, line=self.loc.line(key),  # type: ignore[arg-type]
                        after_event=ev, entity=self.string(t, (*key, "entity")), graph=self.string(t, (*key, "graph")))
            if action == "want":
                if "refs" not in t:
                    raise self.error(key, "a want step needs refs = [\"...\"]")
                name = self.string(t, (*key, "name"))
                if name is not None:
                    if name in names:
                        raise self.error((*key, "name"), f"the want name {name!r} is used twice; names are unique")
                    names.add(name)
                step = dataclasses.replace(
                    step, name=name, refs=self.strings(t, (*key, "refs"), nonempty=True),
                    ttl=self.number(t, (*key, "ttl"), strict=True), sla=self.number(t, (*key, "sla"), strict=True),
                    comment=self.string(t, (*key, "comment"), default="") or "",
                    priority=int(self.get(t, (*key, "priority"), _is_int, "an integer", 0)),
                )
            elif action == "cancel":
                want = self.string(t, (*key, "want"))
                taint = self.string(t, (*key, "taint"))
                if (want is None) == (taint is None):
                    raise self.error(key, "a cancel step needs exactly one of want = \"NAME\" or taint = \"NAME\" "
                                          "(the name of an earlier want or taint step)")
                which, name = ("want", want) if want is not None else ("taint", taint)
                assert name is not None
                known_names = names if which == "want" else taint_names
                if name not in known_names:
                    known = ", ".join(sorted(known_names)) or "none yet"
                    raise self.error((*key, which), f"no earlier {which} step is named {name!r} (named so far: "
                                                    f"{known})")
                step = dataclasses.replace(step, want=want, taint=taint,
                                           reason=self.string(t, (*key, "reason"), default="") or "")
            elif action == "taint":
                if "refs" not in t:
                    raise self.error(key, "a taint step needs refs = [\"...\"]")
                tname = self.string(t, (*key, "name"))
                if tname is not None:
                    if tname in taint_names:
                        raise self.error((*key, "name"), f"the taint name {tname!r} is used twice; names are unique")
                    taint_names.add(tname)
                cascade = t.get("cascade", True)
                if not isinstance(cascade, bool):
                    raise self.error((*key, "cascade"), f"must be true or false, got {toml_type(cascade)}")
                step = dataclasses.replace(step, name=tname, refs=self.strings(t, (*key, "refs"), nonempty=True),
                                           reason=self.string(t, (*key, "reason"), default="") or "",
                                           cascade=cascade, depth=self.integer(t, (*key, "depth")))
            elif action == "crash":
                step = dataclasses.replace(step, downtime=self.number(t, (*key, "downtime"), default=0.0) or 0.0)
            elif action == "stall":
                down = self.number(t, (*key, "downtime"), strict=True)
                if down is None:
                    raise self.error(key, "a stall step needs downtime = SECONDS (how long the runtime is frozen)")
                ttl = self.number(t, (*key, "lease_ttl"), strict=True, default=DEFAULT_LEASE_TTL)
                step = dataclasses.replace(step, downtime=down, lease_ttl=ttl or DEFAULT_LEASE_TTL)
            elif action == "fault":
                step = self.fault_step(t, key, step, job_names)
            else:  # kill
                ref = self.string(t, (*key, "ref"))
                job = self.string(t, (*key, "job"))
                if (ref is None) == (job is None):
                    raise self.error(key, "a kill step needs exactly one of ref = \"...\" (the run building it) "
                                          "or job = \"NAME\" (every running run of that job)")
                if job is not None and job not in job_names:
                    raise self.error((*key, "job"), f"no job named {job!r}; {valid_choices(job, sorted(job_names))}")
                step = dataclasses.replace(step, ref=ref, job=job,
                                           reason=self.string(t, (*key, "reason"), default="") or "")
            steps.append(step)
        return tuple(steps)

    def fault_step(self, t: Mapping[str, Any], key: KeyPath, step: Step, job_names: Iterable[str]) -> Step:
        """A fault to inject from this instant on (see ``actors.Faults``): point, kind, match, skip, times."""
        from actors import FAULT_POINTS, MESSAGES
        from supervisor._supervisor import SUPERVISOR_MESSAGES

        if "point" not in t:
            raise self.error(key, f"a fault step needs point = \"...\"; one of {', '.join(FAULT_POINTS)}")
        point = self.string(t, (*key, "point"), choices=FAULT_POINTS)
        assert point is not None
        messages = {**MESSAGES, "supervisor": SUPERVISOR_MESSAGES}
        if point == "job":
            kinds: Sequence[str] = sorted(job_names)
            matches: Sequence[str] = ()
        elif point in ("handler", "ask_timeout"):
            kinds = (*_ENTITY_KINDS, "supervisor") if point == "handler" else _ENTITY_KINDS
            matches = sorted({m for k in kinds for m in messages[k]})
        else:
            kinds, matches = _ENTITY_KINDS, EVENT_TYPES
        kind = self.string(t, (*key, "kind"), choices=kinds)
        match = self.string(t, (*key, "match"))
        if match is not None:
            if point == "job":
                raise self.error((*key, "match"), "a job fault is chosen by kind = \"JOB NAME\" only")
            valid = messages[kind] if point in ("handler", "ask_timeout") and kind is not None else matches
            if match not in valid:
                what = "message" if point in ("handler", "ask_timeout") else "event type"
                raise self.error((*key, "match"), f"{match!r} is not a {what} of {kind or 'any kind'}; "
                                                  f"{valid_choices(match, valid)}")
        times = self.integer(t, (*key, "times"), default=1, low=1)
        skip = self.integer(t, (*key, "skip"), default=0)
        return dataclasses.replace(step, point=point, kind=kind, match=match, times=times or 1, skip=skip or 0)

    def expect(self, data: Mapping[str, Any], timeline: Sequence[Step]) -> Expectations:
        t = self.table(data, ("expect",))
        self.check_keys(t, ("expect",), _EXPECT_FIELDS, "[expect]")
        metrics = {m: self.bound(t[m], ("expect", m)) for m in METRICS if m in t}
        runs = self.bounds_table(t, ("expect", "runs"), RUN_STATUSES, "job run status")
        events = self.bounds_table(t, ("expect", "events"), EVENT_TYPES, "event type")
        names = {s.name for s in timeline if s.name}
        wants: dict[str, WantExpect] = {}
        for name, v in self.table(t, ("expect", "wants")).items():
            key: KeyPath = ("expect", "wants", name)
            if name not in names:
                raise self.error(key, f"no want step is named {name!r}; {valid_choices(name, sorted(names))}")
            wants[name] = self.want_expect(v, key)
        parts: dict[str, PartitionExpect] = {}
        for ref, v in self.table(t, ("expect", "partitions")).items():
            key = ("expect", "partitions", ref)
            parts[ref] = self.partition_expect(v, key)
        return Expectations(
            invariants=self.get(t, ("expect", "invariants"), lambda v: isinstance(v, bool), "true or false", True),
            all_terminal=self.get(t, ("expect", "all_terminal"), lambda v: isinstance(v, bool), "true or false", True),
            metrics=metrics, runs=runs, events=events, wants=wants, partitions=parts,
        )

    def bounds_table(self, parent: Mapping[str, Any], key: KeyPath, valid: Sequence[str],
                     what: str) -> dict[str, Bound]:
        t = self.table(parent, key)
        out = {}
        for name, v in t.items():
            if name not in valid:
                raise self.error((*key, name), f"unknown {what}; {valid_choices(name, valid)}")
            out[name] = self.bound(v, (*key, name))
        return out

    def want_expect(self, v: object, key: KeyPath) -> WantExpect:
        return WantExpect(*self.status_expect(v, key, "want", WANT_STATUSES, "latency"))

    def partition_expect(self, v: object, key: KeyPath) -> PartitionExpect:
        return PartitionExpect(*self.status_expect(v, key, "partition", PARTITION_STATUSES, "generation"))

    def status_expect(self, v: object, key: KeyPath, what: str, statuses: Sequence[str],
                      measure: str) -> tuple[str | None, Bound | None]:
        """A ``what`` expectation: a status string, or a table of an optional status and a ``measure`` bound."""
        if isinstance(v, str):
            v = {"status": v}
        if not isinstance(v, dict):
            raise self.error(key, f"must be a status string or a table {{ status = ..., {measure} = ... }}, "
                                  f"got {toml_type(v)}")
        self.check_keys(v, key, ("status", measure), f"a {what} expectation")
        status = v.get("status")
        if status is not None and status not in statuses:
            raise self.error(key, f"unknown {what} status {status!r}; {valid_choices(str(status), statuses)}")
        bound = self.bound(v[measure], (*key, measure)) if measure in v else None
        return status, bound

    def explore(self, data: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        t = self.table(data, ("explore",))
        self.check_keys(t, ("explore",), ("params",), "[explore]")
        params = self.table(t, ("explore", "params"))
        out = {}
        for name in params:
            out[name] = self.strings(params, ("explore", "params", name), one_ok=False, nonempty=True)
        return out


def parse_scenario(text: str, path: str | None = None, *, check_graph: bool = True) -> Scenario:
    """Parse and validate scenario text. ``check_graph`` also builds the graph and checks every ref against it."""
    parser = _Parser(text, path)
    scenario = parser.parse()
    if check_graph:
        _check_against_graph(scenario, parser)
    return scenario


def load_scenario(path: str | Path, *, check_graph: bool = True) -> Scenario:
    """Read, parse and validate a scenario file; raises :class:`ScenarioError` naming the file, line and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("no such scenario file", path=str(p)) from None
    except IsADirectoryError:
        raise ScenarioError("is a folder, not a scenario file", path=str(p)) from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(p)) from None
    except OSError as e:
        raise ScenarioError(f"cannot read it: {e.strerror}", path=str(p)) from None
    return parse_scenario(text, str(p), check_graph=check_graph)


def _graph_cycle(upstream: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle of graph names (first repeated last) in the "reads from" relation, or [] (first found, by name)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for up in sorted(upstream.get(name, ())):
            if state.get(up) == 1:
                return [*path[path.index(up):], up]
            if up not in state and (found := visit(up)):
                return found
        path.pop()
        state[name] = 2
        return []

    for name in sorted(upstream):
        if name not in state and (found := visit(name)):
            return found
    return []


def _check_against_graph(sc: Scenario, parser: _Parser) -> None:
    """Build the real graph (each graph, for a scenario of several), then check refs, templates and names."""
    if not sc.graphs:
        _check_one_graph(sc, parser, (), sc.expect.partitions)
        return
    names = [g.name for g in sc.graphs]
    parts: dict[str, dict[str, PartitionExpect]] = {name: {} for name in names}
    for ref, pe in sc.expect.partitions.items():
        gname, sep, inner = ref.partition(":")
        if not sep or gname not in parts:
            raise parser.error(("expect", "partitions", ref), f"in a scenario of several graphs a partition is "
                                                              f"GRAPH:REF, with GRAPH one of {', '.join(names)}")
        parts[gname][inner] = pe
    for name in names:
        _check_one_graph(sc.graph_scenario(name), parser, ("graphs", name), parts[name], label=f"{name}:")


def _check_one_graph(sc: Scenario, parser: _Parser, prefix: KeyPath, partitions: Mapping[str, PartitionExpect],
                     label: str = "") -> None:
    """Build one real graph, then check the refs, templates and names of its steps and jobs against it."""
    try:
        graph = build_graph(sc, lambda job: None)
    except GraphError as e:
        msg = str(e)
        m = re.match(r"jobs? '([^']+)'", msg)
        raise parser.error((*prefix, "job", m.group(1)) if m else (*prefix, "job"), msg) from None

    def check_ref(ref: str, key: KeyPath) -> None:
        try:
            graph.job_for(validate_ref(ref))
        except (InvalidRef, NoJobForRef) as e:
            raise parser.error(key, str(e)) from None

    from supervisor import ScheduleError, check_schedule, parse_partition_set

    for step in sc.timeline:
        key: KeyPath = ("timeline", step.index)
        if step.action == "want":
            try:
                parse_partition_set(graph, step.refs)
            except WantbuildError as e:
                raise parser.error((*key, "refs"), str(e)) from None
            continue
        for ref in step.refs:
            check_ref(ref, (*key, "refs"))
        if step.ref is not None:
            check_ref(step.ref, (*key, "ref"))
        if step.entity is not None and step.after_event is not None and step.after_event.startswith("Partition"):
            check_ref(step.entity, (*key, "entity"))
    for spec in sc.schedules:
        try:
            check_schedule(spec, now=0.0, graph=graph)
        except ScheduleError as e:
            raise parser.error(("schedule", spec.name), str(e)) from None
    for ref in partitions:
        check_ref(ref, ("expect", "partitions", label + ref))
    for job in sc.jobs:
        key = (*prefix, "job", job.name)
        for ref in job.only:
            check_ref(ref, (*key, "only"))
        for ref in job.bad_partitions:
            check_ref(ref, (*key, "bad_partitions"))
        out_names = {n for p in job.outputs for n in re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}", p)}
        for template in job.missing:
            used = set(re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}", template))
            if used - out_names:
                raise parser.error((*key, "missing"),
                                   f"the template {template!r} uses {{{sorted(used - out_names)[0]}}}, which the "
                                   f"outputs do not have (they have: {', '.join(sorted(out_names)) or 'none'})")
            try:
                sample = template.format(**{n: "x" for n in used})
                graph.job_for(validate_ref(sample))
            except (InvalidRef, NoJobForRef) as e:
                raise parser.error((*key, "missing"), f"the template {template!r} does not name a ref any job "
                                                      f"builds: {e}") from None
    for name, values in sc.explore_params.items():
        for v in values:
            if "/" in v or not v:
                raise parser.error(("explore", "params", name), f"the value {v!r} must be non-empty without '/'")
