"""Partition sets: many refs named compactly, counted, tested and walked without expanding them.

A want may name a **set** instead of listing refs: ranges over one typed parameter of a job's output pattern
(``daily/2026-01-01..2026-11-30``) and/or literal refs. A :class:`PartitionSet` stores each range as
``prefix + value + suffix`` for the values ``lo..hi`` of a :class:`ParamType` (by ordinal: a date's day
number, an hour's hour number, an int, an enum's index), so a million days cost a few dozen bytes, and

- ``len(s)`` counts, ``ref in s`` tests membership, ``s[i]`` indexes and ``s.batches(n)`` walks lazily, all
  without building the list;
- ``s.to_json()`` / :meth:`PartitionSet.from_json` is what a ``WantCreated`` event stores: the set carries
  its types, so replaying a log needs no graph.

The parameter types (declared on a job's output pattern, see ``docs/graph-file.md``):

``date``  ``YYYY-MM-DD``, a day (its data time: midnight UTC at its start)
``hour``  ``YYYY-MM-DDTHH``, an hour (its data time: the start of the hour, UTC)
``int``   a decimal integer; a range whose ends have leading zeros (``00..23``) keeps their width
``enum``  one of a declared list of values, ranged over in the declared order

Parsing a set from text needs the graph (which parameter of which pattern has which type):
``supervisor.parse_partition_set``. Everything here is pure and graph-free.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, overload

from eventlog._errors import WantbuildError

__all__ = [
    "PARAM_TYPES",
    "ParamType",
    "PartitionSet",
    "PartitionSetError",
    "Range",
    "param_type",
]

PARAM_TYPES: Final[tuple[str, ...]] = ("date", "hour", "int", "enum")
"""The names of the parameter types (an enum is declared as its list of values)."""

_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR_RE = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2})")
_INT_RE = re.compile(r"-?\d+")


class PartitionSetError(WantbuildError, ValueError):
    """A partition set that cannot be built: a reversed or empty range, a range over an untyped parameter, an
    end that is not a value of the parameter's type... The message names the input and the fix."""


@dataclass(frozen=True)
class ParamType:
    """The type of one pattern parameter: how its values parse to ordinals and format back.

    ``kind`` is one of :data:`PARAM_TYPES`; ``values`` lists an enum's values (in range order).
    """

    kind: str
    values: tuple[str, ...] = ()
    _index: Mapping[str, int] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in PARAM_TYPES:
            raise PartitionSetError(f"unknown parameter type {self.kind!r}; use one of date, hour, int, or a "
                                    f"list of values (an enum)")
        if self.kind == "enum":
            if not self.values or not all(isinstance(v, str) and v and "/" not in v for v in self.values):
                raise PartitionSetError(f"an enum needs a non-empty list of non-empty values without '/', got "
                                        f"{list(self.values)!r}")
            if len(set(self.values)) != len(self.values):
                raise PartitionSetError(f"an enum lists a value twice: {list(self.values)!r}; list each once")
            object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.values)})

    # -- values ----------------------------------------------------------------------------------------
    def ordinal(self, text: str) -> int | None:
        """The ordinal of a value in its canonical spelling, else None (an int's width is checked by callers)."""
        kind = self.kind
        try:
            if kind == "date":
                if _DATE_RE.fullmatch(text) is None:
                    return None
                return dt.date.fromisoformat(text).toordinal()
            if kind == "hour":
                m = _HOUR_RE.fullmatch(text)
                if m is None or int(m.group(2)) > 23:
                    return None
                return dt.date.fromisoformat(m.group(1)).toordinal() * 24 + int(m.group(2))
        except ValueError:
            return None
        if kind == "int":
            return int(text) if _INT_RE.fullmatch(text) else None
        return self._index.get(text)

    def format(self, ordinal: int, width: int = 0) -> str:
        kind = self.kind
        if kind == "date":
            return dt.date.fromordinal(ordinal).isoformat()
        if kind == "hour":
            day, hour = divmod(ordinal, 24)
            return f"{dt.date.fromordinal(day).isoformat()}T{hour:02d}"
        if kind == "int":
            if width and ordinal < 0:
                return "-" + f"{-ordinal:0{width - 1}d}"
            return f"{ordinal:0{width}d}" if width else str(ordinal)
        return self.values[ordinal]

    def canonical(self, text: str, width: int = 0) -> int | None:
        """The ordinal if ``text`` is exactly how this type spells it (at ``width`` for an int), else None."""
        n = self.ordinal(text)
        if n is None or (self.kind == "int" and self.format(n, width) != text):
            return None
        return n

    def epoch(self, ordinal: int) -> float | None:
        """The data time of a value (seconds since the epoch, UTC: the start of its day or hour), else None."""
        if self.kind == "date":
            return float((ordinal - _EPOCH_DAY) * 86400)
        if self.kind == "hour":
            return float((ordinal - _EPOCH_DAY * 24) * 3600)
        return None

    @property
    def timed(self) -> bool:
        return self.kind in ("date", "hour")

    def describe(self) -> str:
        """For messages: ``a date (YYYY-MM-DD)``."""
        return {
            "date": "a date (YYYY-MM-DD)",
            "hour": "an hour (YYYY-MM-DDTHH)",
            "int": "an integer",
        }.get(self.kind) or f"one of {', '.join(self.values[:10])}{' ...' if len(self.values) > 10 else ''}"

    def to_json(self) -> Any:
        return list(self.values) if self.kind == "enum" else self.kind

    def __str__(self) -> str:
        return self.kind if self.kind != "enum" else "enum[" + ", ".join(self.values) + "]"


def param_type(spec: object) -> ParamType:
    """A :class:`ParamType` from its declaration: ``"date"``, ``"hour"``, ``"int"``, or a list of enum values."""
    if isinstance(spec, ParamType):
        return spec
    if isinstance(spec, str):
        if spec == "enum":
            raise PartitionSetError("an enum is declared as the list of its values, e.g. [\"eu\", \"us\"]")
        return ParamType(spec)
    if isinstance(spec, list | tuple):
        return ParamType("enum", tuple(spec))
    raise PartitionSetError(f"a parameter type is 'date', 'hour', 'int' or a list of enum values, got {spec!r}")


@dataclass(frozen=True)
class Range:
    """The refs ``prefix + type.format(i, width) + suffix`` for ``i`` in ``lo..hi`` (inclusive, ``lo <= hi``).

    ``pattern`` and ``param`` say where it came from (``daily/{date}``, ``date``) and ``fixed`` the other
    parameters' values: they are what tells whether two ranges can share refs.
    """

    prefix: str
    suffix: str
    type: ParamType
    lo: int
    hi: int
    width: int = 0
    pattern: str = ""
    param: str = ""
    fixed: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return self.hi - self.lo + 1

    def ref(self, ordinal: int) -> str:
        return f"{self.prefix}{self.type.format(ordinal, self.width)}{self.suffix}"

    def ordinal_of(self, ref: str) -> int | None:
        """The ordinal of ``ref`` if it is in this range, else None."""
        p, s = self.prefix, self.suffix
        if len(ref) <= len(p) + len(s) or not ref.startswith(p) or not ref.endswith(s):
            return None
        n = self.type.canonical(ref[len(p):len(ref) - len(s)], self.width)
        return n if n is not None and self.lo <= n <= self.hi else None

    def text(self) -> str:
        """``daily/2026-01-01..2026-11-30`` (the ranged value's two ends in place)."""
        lo = self.type.format(self.lo, self.width)
        if self.lo == self.hi:
            return self.ref(self.lo)
        return f"{self.prefix}{lo}..{self.type.format(self.hi, self.width)}{self.suffix}"

    def key(self) -> tuple[Any, ...]:
        return (self.prefix, self.suffix, self.type, self.width)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prefix": self.prefix, "suffix": self.suffix, "type": self.type.to_json(),
                               "lo": self.type.format(self.lo, self.width), "hi": self.type.format(self.hi, self.width)}
        if self.width:
            out["width"] = self.width
        if self.pattern:
            out["pattern"] = self.pattern
            out["param"] = self.param
            out["fixed"] = dict(self.fixed)
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Range:
        kind = param_type(data["type"])
        width = int(data.get("width", 0))
        lo, hi = kind.ordinal(str(data["lo"])), kind.ordinal(str(data["hi"]))
        if lo is None or hi is None or lo > hi:
            raise PartitionSetError(f"a stored range is broken: {dict(data)!r}")
        return Range(str(data["prefix"]), str(data["suffix"]), kind, lo, hi, width, str(data.get("pattern", "")),
                     str(data.get("param", "")), tuple(sorted(dict(data.get("fixed", {})).items())))


def _without(r: Range, ordinal: int) -> list[Range]:
    """``r`` less one of its values (zero, one or two ranges)."""
    out = []
    if ordinal > r.lo:
        out.append(_replace(r, r.lo, ordinal - 1))
    if ordinal < r.hi:
        out.append(_replace(r, ordinal + 1, r.hi))
    return out


def _replace(r: Range, lo: int, hi: int) -> Range:
    return Range(r.prefix, r.suffix, r.type, lo, hi, r.width, r.pattern, r.param, r.fixed)


class PartitionSet(Sequence[str]):
    """An ordered set of partition refs: ranges first (in the order given), then literal refs.

    Build it with :meth:`PartitionSet.of`, which normalises: ranges over the same values merge, literal refs
    that a range holds and repeated refs are dropped, and a ref two ranges share is kept once. So ``len`` is
    exact and iteration never yields a ref twice.
    """

    __slots__ = ("_offsets", "_ref_index", "_size", "ranges", "refs")

    def __init__(self, ranges: Sequence[Range] = (), refs: Sequence[str] = ()) -> None:
        """Trusts its input to be normalised; use :meth:`of`."""
        self.ranges: tuple[Range, ...] = tuple(ranges)
        self.refs: tuple[str, ...] = tuple(refs)
        offsets = []
        total = 0
        for r in self.ranges:
            offsets.append(total)
            total += len(r)
        self._offsets = tuple(offsets)
        self._size = total + len(self.refs)
        self._ref_index: frozenset[str] | None = None

    @classmethod
    def of(cls, ranges: Iterable[Range] = (), refs: Iterable[str] = ()) -> PartitionSet:
        merged: list[Range] = []
        for r in ranges:
            for i, other in enumerate(merged):  # same values and overlapping or adjacent: one range
                if other.key() == r.key() and r.lo <= other.hi + 1 and other.lo <= r.hi + 1:
                    merged[i] = _replace(other, min(r.lo, other.lo), max(r.hi, other.hi))
                    break
            else:
                merged.append(r)
        merged = _merge_again(merged)
        # Ranges of one pattern over different parameters share at most one ref: keep it in the first only.
        out: list[Range] = []
        for r in merged:
            pieces = [r]
            for earlier in out:
                if earlier.pattern and earlier.pattern == r.pattern and earlier.param != r.param:
                    pieces = [q for p in pieces for q in _split_shared(earlier, p)]
            out.extend(pieces)
        kept = dict.fromkeys(ref for ref in refs if not any(x.ordinal_of(ref) is not None for x in out))
        return cls(out, tuple(kept))

    @classmethod
    def from_refs(cls, refs: Iterable[str]) -> PartitionSet:
        return cls((), tuple(dict.fromkeys(refs)))

    # -- Sequence ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError(f"partition set index {index} out of range ({self._size} refs)")
        for r, start in zip(self.ranges, self._offsets, strict=True):
            if index < start + len(r):
                return r.ref(r.lo + index - start)
        return self.refs[index - (self._size - len(self.refs))]

    def __iter__(self) -> Iterator[str]:
        for r in self.ranges:
            fmt, p, s, w = r.type.format, r.prefix, r.suffix, r.width
            for i in range(r.lo, r.hi + 1):
                yield f"{p}{fmt(i, w)}{s}"
        yield from self.refs

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        if any(r.ordinal_of(ref) is not None for r in self.ranges):
            return True
        if self._ref_index is None:
            self._ref_index = frozenset(self.refs)
        return ref in self._ref_index

    def index(self, ref: Any, start: int = 0, stop: int | None = None) -> int:
        for r, offset in zip(self.ranges, self._offsets, strict=True):
            n = r.ordinal_of(ref)
            if n is not None:
                return offset + n - r.lo
        try:
            return self._size - len(self.refs) + self.refs.index(ref)
        except ValueError:
            raise ValueError(f"{ref!r} is not in the partition set") from None

    def batches(self, size: int, start: int = 0) -> Iterator[list[str]]:
        """The refs from index ``start`` on, ``size`` at a time (the last batch may be shorter)."""
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        batch: list[str] = []
        for ref in self.iter_from(start):
            batch.append(ref)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def iter_from(self, start: int) -> Iterator[str]:
        """The refs from index ``start`` on, without walking the ones before."""
        at = 0
        for r in self.ranges:
            n = len(r)
            if start < at + n:
                fmt, p, s, w = r.type.format, r.prefix, r.suffix, r.width
                for i in range(r.lo + max(0, start - at), r.hi + 1):
                    yield f"{p}{fmt(i, w)}{s}"
            at += n
        yield from self.refs[max(0, start - at):]

    # -- other ---------------------------------------------------------------------------------------------
    @property
    def data_time(self) -> float | None:
        """The latest data time of the ranges over a date or an hour (None if none is timed)."""
        times = [r.type.epoch(r.hi) for r in self.ranges if r.type.timed]
        return max((t for t in times if t is not None), default=None)

    def describe(self, limit: int = 3) -> str:
        """``daily/2026-01-01..2026-11-30 and 2 more refs (336 partitions)``."""
        parts = [r.text() for r in self.ranges[:limit]]
        parts += list(self.refs[: max(0, limit - len(parts))])
        more = len(self.ranges) + len(self.refs) - len(parts)
        text = ", ".join(parts) + (f" and {more} more" if more > 0 else "")
        return f"{text} ({self._size} partition{'s' if self._size != 1 else ''})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ranges": [r.to_json() for r in self.ranges]}
        if self.refs:
            out["refs"] = list(self.refs)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionSet:
        return cls(tuple(Range.from_json(r) for r in data.get("ranges", ())), tuple(data.get("refs", ())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartitionSet):
            return NotImplemented
        return self.ranges == other.ranges and self.refs == other.refs

    def __hash__(self) -> int:
        return hash((self.ranges, self.refs))

    def __repr__(self) -> str:
        return f"PartitionSet({self.describe()})"


def _merge_again(ranges: list[Range]) -> list[Range]:
    """Merging two ranges may make one overlap a third: repeat until nothing merges."""
    changed = True
    while changed:
        changed = False
        for i in range(len(ranges)):
            for j in range(i + 1, len(ranges)):
                a, b = ranges[i], ranges[j]
                if a.key() == b.key() and b.lo <= a.hi + 1 and a.lo <= b.hi + 1:
                    ranges[i] = _replace(a, min(a.lo, b.lo), max(a.hi, b.hi))
                    del ranges[j]
                    changed = True
                    break
            if changed:
                break
    return ranges


def _split_shared(first: Range, second: Range) -> list[Range]:
    """``second`` less the one ref it may share with ``first`` (same pattern, another ranged parameter)."""
    fixed_first = dict(first.fixed)
    fixed_second = dict(second.fixed)
    value = fixed_second.get(first.param)
    other = fixed_first.get(second.param)
    if value is None or other is None:
        return [second]
    if any(fixed_first.get(k, v) != v for k, v in fixed_second.items() if k != first.param):
        return [second]
    n = first.type.canonical(value, first.width)
    if n is None or not first.lo <= n <= first.hi:
        return [second]
    m = second.type.canonical(other, second.width)
    if m is None or not second.lo <= m <= second.hi:
        return [second]
    return _without(second, m)
