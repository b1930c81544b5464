"""Reading partition sets from text against a graph: ``daily/2026-01-01..2026-11-30``, ``hourly/2026-11-02T00..23``.

A spec without ``..`` is one literal ref. A spec with ``..`` is a **range**: ``START..END`` in place of one
parameter of a job's output pattern, where START and END are whole values of that parameter's declared type
(the rest of the ref is written once). ``hourly/2026-11-02T00..23`` ranges over ``{hour}`` of
``hourly/{date}T{hour}`` (an int: ``00`` to ``23``, keeping the width), ``daily/2026-01-01..2026-11-30`` over
``{date}`` of ``daily/{date}``. Both ends are included.

Bad input raises :class:`~actors._partition_set.PartitionSetError` naming the spec and the fix, before anything
is written: a reversed range, a range with an empty end, a range over a parameter without a type, an end that is
not a value of the type (``daily/2026-01-01..12``: the end is not a date), a spec no job's pattern matches.

A ref containing ``..`` inside a segment (``files/a..b``) is valid, but on a command line it reads as a range:
want such refs through ``--from-file`` (whose lines are literal refs) or the Python API's list of refs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from actors._partition_set import ParamType, PartitionSet, PartitionSetError, Range
from actors._refs import InvalidRef, validate_ref

from ._graph import Graph
from ._jobs import Job
from ._pattern import Pattern, _Slot

__all__ = ["parse_partition_set", "read_refs"]

_TYPED_RE = {
    "date": r"\d{4}-\d{2}-\d{2}",
    "hour": r"\d{4}-\d{2}-\d{2}T\d{2}",
    "int": r"-?\d+",
}


def _value_re(kind: ParamType | None) -> str:
    if kind is None:
        return r"[^/]+"
    if kind.kind == "enum":
        return "(?:" + "|".join(re.escape(v) for v in sorted(kind.values, key=len, reverse=True)) + ")"
    return _TYPED_RE[kind.kind]


@dataclass(frozen=True)
class _Candidate:
    job: Job
    pattern: Pattern
    param: str
    kind: ParamType | None
    lo: str
    hi: str
    fixed: dict[str, str]


def _candidates(graph: Graph, spec: str) -> list[_Candidate]:
    """Every (job, pattern, placeholder) under which ``spec`` reads as ``...START..END...``."""
    out: list[_Candidate] = []
    for job in graph.jobs().values():
        for pattern in job.outputs:
            for slot in pattern.names:
                regex = _range_regex(pattern, slot, job)
                m = regex.fullmatch(spec)
                if m is None:
                    continue
                values = m.groupdict()
                lo, hi = values.pop("_lo"), values.pop("_hi")
                out.append(_Candidate(job, pattern, slot, job.param_types.get(slot), lo, hi, values))
    return out


_REGEX_CACHE: dict[tuple[str, str, int], re.Pattern[str]] = {}


def _range_regex(pattern: Pattern, slot: str, job: Job) -> re.Pattern[str]:
    key = (pattern.text, slot, id(job))
    found = _REGEX_CACHE.get(key)
    if found is not None:
        return found
    kinds = job.param_types
    parts = []
    for segment in pattern.segments:
        text = ""
        for item in segment:
            if isinstance(item, _Slot):
                if item.name == slot:
                    # The start must be a value of the type; the end is read loosely so a wrong one is named.
                    text += f"(?P<_lo>{_value_re(kinds.get(slot))})\\.\\.(?P<_hi>[^/]*?)"
                else:
                    text += f"(?P<{item.name}>{_value_re(kinds.get(item.name))})"
            else:
                text += re.escape(item)
        parts.append(text)
    regex = re.compile(re.escape(pattern.scheme) + "/".join(parts))
    if len(_REGEX_CACHE) > 4096:
        _REGEX_CACHE.clear()
    _REGEX_CACHE[key] = regex
    return regex


def _range(graph: Graph, spec: str) -> Range:
    if spec.count("..") > 1 and "..." not in spec:
        raise PartitionSetError(f"range {spec!r} has more than one '..'; a range runs over one parameter: write "
                                f"one range per parameter value, e.g. one spec per line in --from-file")
    found = _candidates(graph, spec)
    if not found:
        start, _, end = spec.partition("..")
        if not end:
            raise PartitionSetError(f"range {spec!r} has no end; write START..END, e.g. daily/2026-01-01..2026-01-31")
        if not start or start.endswith("/"):
            raise PartitionSetError(f"range {spec!r} has no start; write START..END, e.g. "
                                    f"daily/2026-01-01..2026-01-31")
        listing = "; ".join(f"{j.name}: {', '.join(p.text for p in j.outputs)}" for j in graph.jobs().values())
        raise PartitionSetError(f"no job's output pattern matches the range {spec!r} ({listing or 'no jobs'}); a "
                                f"range is START..END in place of one typed parameter, e.g. "
                                f"daily/2026-01-01..2026-01-31 for outputs = \"daily/{{date}}\"")
    typed = [c for c in found if c.kind is not None]
    if not typed:
        c = found[0]
        guess = next((k for k in ("date", "hour", "int") if ParamType(k).ordinal(c.lo) is not None),
                     f'["{c.lo}", "{c.hi}"]')
        if guess.startswith("d") or guess.startswith("h") or guess.startswith("i"):
            guess = f'"{guess}"'
        raise PartitionSetError(
            f"range {spec!r} runs over {{{c.param}}} of {c.pattern.text!r} (job {c.job.name!r}), which has no type; "
            f"declare it on the job, e.g. params = {{ {c.param} = {guess} }} (types: date, hour, int, or a list of "
            f"values)")
    good = [c for c in typed if c.hi and c.kind is not None and c.kind.ordinal(c.hi) is not None]
    if not good:
        c = typed[0]
        assert c.kind is not None
        if not c.hi:
            raise PartitionSetError(f"range {spec!r} has no end; write START..END, e.g. "
                                    f"{_example(c, c.lo)}")
        raise PartitionSetError(
            f"range {spec!r}: its end {c.hi!r} is not {c.kind.describe()}; the end of a range is a whole value of "
            f"{{{c.param}}} in {c.pattern.text!r} (job {c.job.name!r}), not a part of one: write e.g. "
            f"{_example(c, c.lo)}")
    c = good[0]
    kind = c.kind
    assert kind is not None
    width = 0
    if kind.kind == "int":
        padded = [v for v in (c.lo, c.hi) if v.lstrip("-").startswith("0") and len(v.lstrip("-")) > 1]
        if padded:
            width = len(c.lo)
            if len(c.hi) != width:
                raise PartitionSetError(f"range {spec!r}: its ends {c.lo!r} and {c.hi!r} have different widths; "
                                        f"write both with the same number of digits")
    lo = kind.canonical(c.lo, width)
    hi = kind.canonical(c.hi, width)
    if lo is None or hi is None:
        bad = c.lo if lo is None else c.hi
        raise PartitionSetError(f"range {spec!r}: {bad!r} is not {kind.describe()} as the pattern "
                                f"{c.pattern.text!r} spells it")
    if lo > hi:
        raise PartitionSetError(f"range {spec!r} is reversed: {c.lo!r} comes after {c.hi!r}, so it is empty; write "
                                f"the earlier end first: {_spec(c, c.hi, c.lo)}")
    try:
        first = c.pattern.format(**{**c.fixed, c.param: c.lo})
        last = c.pattern.format(**{**c.fixed, c.param: c.hi})
    except Exception as e:
        raise PartitionSetError(f"range {spec!r} makes an invalid ref: {e}") from None
    marker = "\x00"
    # prefix + value + suffix: the pattern with every other parameter filled in, split at the ranged one.
    text = _fill(c.pattern, c.fixed, c.param, marker)
    prefix, _, suffix = text.partition(marker)
    r = Range(prefix, suffix, kind, lo, hi, width, c.pattern.text, c.param, tuple(sorted(c.fixed.items())))
    assert (r.ref(lo), r.ref(hi)) == (first, last)
    return r


def _fill(pattern: Pattern, fixed: dict[str, str], param: str, marker: str) -> str:
    parts = []
    for segment in pattern.segments:
        parts.append("".join(
            (marker if item.name == param else fixed[item.name]) if isinstance(item, _Slot) else item
            for item in segment))
    return pattern.scheme + "/".join(parts)


def _spec(c: _Candidate, lo: str, hi: str) -> str:
    return _fill(c.pattern, c.fixed, c.param, "\x00").replace("\x00", f"{lo}..{hi}")


def _example(c: _Candidate, lo: str) -> str:
    kind = c.kind
    assert kind is not None
    if c.hi and len(c.hi) < len(lo) and kind.ordinal(lo[: len(lo) - len(c.hi)] + c.hi) is not None:
        return _spec(c, lo, lo[: len(lo) - len(c.hi)] + c.hi)  # what an abbreviated end probably meant
    n = kind.ordinal(lo)
    if n is None:
        return _spec(c, lo, "END")
    end = n + 1 if kind.kind != "enum" else min(n + 1, len(kind.values) - 1)
    width = len(lo) if kind.kind == "int" and lo.startswith("0") else 0
    return _spec(c, lo, kind.format(max(end, n), width))


def parse_partition_set(graph: Graph, specs: Iterable[str] = (), *, refs: Iterable[str] = (),
                        check: bool = True) -> PartitionSet:
    """The partition set that ``specs`` (ranges and refs) and ``refs`` (literal refs, as read from a file) name.

    Raises :class:`~actors._partition_set.PartitionSetError` naming the spec and the fix (nothing is written);
    with ``check``, also :class:`~actors.InvalidRef` / :class:`NoJobForRef` for a literal ref no job produces.
    An empty result is an error too.
    """
    ranges: list[Range] = []
    literal: list[str] = []
    for spec in specs:
        if not isinstance(spec, str):
            raise PartitionSetError(f"a partition spec must be a str, got {type(spec).__name__} {spec!r}")
        if ".." in spec and _looks_like_range(spec):
            ranges.append(_range(graph, spec))
        else:
            literal.append(spec)
    literal.extend(refs)
    if check:
        for ref in literal:
            validate_ref(ref)
            graph.job_of(ref)
    result = PartitionSet.of(ranges, literal)
    if not len(result):
        raise PartitionSetError("the partition set is empty; name at least one ref or range "
                                "(e.g. daily/2026-01-01..2026-01-31)")
    return result


def _looks_like_range(spec: str) -> bool:
    """A ``..`` inside a segment (a whole ``..`` segment is an invalid ref, reported as such)."""
    return any(".." in seg and seg != ".." for seg in spec.split("/"))


def read_refs(lines: Iterable[str], *, source: str) -> list[str]:
    """Literal refs from a file's lines: blank lines and ``#`` comments skipped, surrounding whitespace stripped.

    Raises :class:`~actors.InvalidRef` with the file and line number for an invalid ref.
    """
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            out.append(validate_ref(text))
        except InvalidRef as e:
            raise InvalidRef(e.ref, e.rule, f"{e.problem} ({source}, line {number})") from None
    return out


def check_set(graph: Graph, parts: PartitionSet, sample: Sequence[str] = ()) -> None:
    """Every range's ends and the given refs are produced by a job of ``graph`` (NoJobForRef otherwise)."""
    for r in parts.ranges:
        graph.job_of(r.ref(r.lo))
        graph.job_of(r.ref(r.hi))
    for ref in sample:
        graph.job_of(ref)

