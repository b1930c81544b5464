"""Writing a scenario back as TOML: :func:`dump_scenario` (the explorer writes the cases it shrinks with it).

The text reads back, with :func:`~scenarios._parser.parse_scenario`, into an equal
:class:`~scenarios._model.Scenario`; fields left at their defaults are not written.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from supervisor import Schedule

from ._model import _STEP_FIELDS, DEFAULT_HORIZON, JobSpec, Scenario, _num

__all__ = ["dump_scenario"]


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _value(value: Any) -> str:
    """A job's or a step's field value as TOML: a list, a quoted string, or a number."""
    if isinstance(value, tuple):
        return _list(value)
    if isinstance(value, str):
        return _q(value)
    return _num(value)


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else _q(name)


def _dump_jobs(out: list[str], jobs: Sequence[JobSpec], table: str) -> None:
    """The ``[TABLE.JOB]`` tables of ``jobs`` (``table``: ``job`` or ``graphs.NAME.job``), then their scripts."""
    defaults = JobSpec(name="x", outputs=("x",))
    for job in jobs:
        out.append("")
        out.append(f"[{table}.{_key(job.name)}]")
        out.append(f"outputs = {_list(job.outputs)}")
        for f in dataclasses.fields(JobSpec):
            if f.name in ("name", "outputs", "line", "script"):
                continue
            value = getattr(job, f.name)
            if value == getattr(defaults, f.name):
                continue
            if f.name == "params":
                out.append("params = { " + ", ".join(
                    f"{_key(k)} = {_list(v) if isinstance(v, tuple) else _q(v)}" for k, v in value.items()) + " }")
            else:
                out.append(f"{f.name} = {_value(value)}")
    for job in jobs:
        if job.script:
            out.append("")
            out.append(f"[{table}.{_key(job.name)}.script]")
            for ref, attempts in job.script.items():
                items = []
                for a in attempts:
                    fields = [f"duration = {_num(a.duration)}"]
                    if a.outcome != "succeed":
                        fields.append(f"outcome = {_q(a.outcome)}")
                    if a.missing:
                        fields.append(f"missing = {_list(a.missing)}")
                    items.append("{ " + ", ".join(fields) + " }")
                out.append(f"{_q(ref)} = [{', '.join(items)}]")


def dump_scenario(sc: Scenario, *, header: str = "") -> str:
    """The scenario as TOML text that :func:`parse_scenario` reads back into an equal :class:`Scenario`."""
    out: list[str] = []
    if header:
        out.extend(f"# {line}" if line else "#" for line in header.splitlines())
        out.append("")
    out.append("[scenario]")
    out.append(f"name = {_q(sc.name)}")
    if sc.description:
        out.append(f"description = {_q(sc.description)}")
    out.append(f"seed = {sc.seed}")
    out.append(f"policy = {_q(sc.policy)}")
    if sc.horizon != DEFAULT_HORIZON:
        out.append(f"horizon = {_num(sc.horizon)}")
    if sc.pools:
        out.append("")
        out.append("[pools]")
        out.extend(f"{_key(name)} = {size}" for name, size in sc.pools.items())
    for sched in sc.schedules:
        out.append("")
        out.append(f"[schedule.{_key(sched.name)}]")
        unset = Schedule(name="x", cron="", want="")
        for f in dataclasses.fields(Schedule):
            value = getattr(sched, f.name)
            if f.name == "name" or (f.name not in ("cron", "want") and value == getattr(unset, f.name)):
                continue
            out.append(f"{f.name} = {_value(value)}")
    _dump_jobs(out, sc.jobs, "job")
    for g in sc.graphs:
        out.append("")
        out.append(f"[graphs.{_key(g.name)}]")
        if g.upstream:
            out.append(f"upstream = {_list(g.upstream)}")
        _dump_jobs(out, g.jobs, f"graphs.{_key(g.name)}.job")
    for step in sorted(sc.timeline, key=lambda s: s.index):
        out.append("")
        out.append("[[timeline]]")
        out.append(f"at = {_num(step.at)}")
        out.append(f"action = {_q(step.action)}")
        for name in _STEP_FIELDS[step.action][2:]:
            value = getattr(step, name)
            if isinstance(value, bool):  # cascade: true unless said
                if not value:
                    out.append(f"{name} = false")
                continue
            if name == "depth":
                if value is not None:
                    out.append(f"depth = {value}")
                continue
            if (value in (None, "", (), 0.0) and name != "refs") or (name == "times" and value == 1):
                continue
            out.append(f"{name} = {_value(value)}")
    e = sc.expect
    out.append("")
    out.append("[expect]")
    out.append(f"invariants = {'true' if e.invariants else 'false'}")
    out.append(f"all_terminal = {'true' if e.all_terminal else 'false'}")
    for m, b in e.metrics.items():
        out.append(f"{m} = {b.to_toml()}")
    for section, table in (("runs", e.runs), ("events", e.events)):
        if table:
            out.append(f"{section} = {{ " + ", ".join(f"{k} = {b.to_toml()}" for k, b in table.items()) + " }")
    blocks: tuple[tuple[str, Mapping[str, object], Callable[[str], str], tuple[str, ...]], ...] = (
        ("[expect.wants]", e.wants, _key, ("status", "latency")),
        ("[expect.partitions]", e.partitions, _q, ("status", "generation")),
    )
    for header, entries, key, fields in blocks:
        if entries:
            out.append("")
            out.append(header)
            for name, one in entries.items():
                out.append(f"{key(name)} = {{ {_inline(one, fields)} }}")
    if sc.explore_params:
        out.append("")
        out.append("[explore.params]")
        for name, values in sc.explore_params.items():
            out.append(f"{_key(name)} = {_list(values)}")
    return "\n".join(out) + "\n"


def _inline(expect: object, fields: tuple[str, ...]) -> str:
    """The set fields of one want's or partition's expectation as an inline table's body (status quoted)."""
    items = []
    for f in fields:
        v = getattr(expect, f)
        if v is not None:
            items.append(f"{f} = {_q(v) if f == 'status' else v.to_toml()}")
    return ", ".join(items)
