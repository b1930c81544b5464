"""The job graph: which job builds which partition refs, and how.

A :class:`Graph` holds :class:`Job` s. Each job produces the refs matched by its output :class:`Pattern` s
(``daily/{date}``); exactly one job may produce any ref, which :meth:`Graph.add_job` proves when a job is
added (an exact automaton check, not a heuristic) so :meth:`Graph.job_for` never has to choose.

Errors (all re-exported by ``supervisor``)::

    WantbuildError
     ├── GraphError(ValueError)      a graph definition that cannot be used; names the job(s) and the fix
     ├── NoJobForRef(LookupError)    no job produces the ref that was asked for
     └── UnknownJob(KeyError)        no job has that name

Decisions worth knowing:

- A placeholder ``{name}`` matches one or more characters inside one segment (never ``/``); several may share a
  segment (``events/date={date}/hour={hour}``). ``{{`` and ``}}`` are a literal brace. ``{name:regex}`` is not
  supported: it would make the ambiguity check inexact.
- A pattern may start with a literal ``scheme://`` prefix like a ref (``s3://bucket/{date}``); a placeholder
  cannot be part of the scheme.
- Two patterns are ambiguous when some *valid* ref (see ``actors._refs``) matches both. The check works per
  segment on the product of the two patterns' automata, also tracking "is this segment ``.`` or ``..``", and
  finds the shortest common ref, which the error message shows as a witness. Two patterns of one job may not
  overlap either (the ref's params would be ambiguous).
- String ``deps`` are templates formatted with the output's params (:class:`TemplateDeps`); every template's
  placeholders must exist in every output pattern of the job.
- :meth:`Graph.fingerprint` covers job names, output patterns, dependency templates, batch, concurrency, retry,
  timeouts and the command argv (as written in the graph file, see :attr:`Job.declared_command`); not callable
  identity, the graph's name or collision policies.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias, TypeVar

from actors import POLICIES, CollisionPolicy
from actors._partition_set import ParamType, PartitionSetError, param_type
from actors._refs import _SCHEME_RE, MAX_REF_LENGTH, InvalidRef, char_problem, validate_ref
from eventlog import get_logger
from eventlog._errors import WantbuildError

from ._hints import did_you_mean

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

JobCallable: TypeAlias = Callable[[Any], Awaitable[None]]
"""An async job: called with the executor's context object (``ctx.partitions``, ``ctx.heartbeat()``)."""
DepsFunction: TypeAlias = Callable[[str, Mapping[str, str]], Sequence[str]]
"""Static dependencies of one ref, given the ref and the params its output pattern matched."""

F = TypeVar("F", bound=Callable[..., Any])

_JOB_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
_FINGERPRINT_FORMAT = "wantbuild.graph-fingerprint/1"


_FOUND_MAX = 1 << 19
"""At most this many refs are remembered by :meth:`Graph.job_of` (a dict entry each: some 20 MB at the limit;
the ref strings are the ones the runtime holds anyway)."""


class GraphError(WantbuildError, ValueError):
    """A graph definition that cannot be used. The message names the job(s) and says how to fix it."""


class NoJobForRef(WantbuildError, LookupError):
    """No job of the graph produces the ref."""

    def __init__(self, ref: str, message: str) -> None:
        self.ref = ref
        super().__init__(message)

    def __reduce__(self) -> tuple[type[NoJobForRef], tuple[str, str]]:
        return type(self), (self.ref, str(self))


class UnknownJob(WantbuildError, KeyError):
    """No job has the given name."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return self.message

    def __reduce__(self) -> tuple[type[UnknownJob], tuple[str, str]]:
        return type(self), (self.name, self.message)


# --------------------------------------------------------------------------------------------------------
# Patterns


class _Slot(NamedTuple):
    """A ``{name}`` placeholder: one or more characters of one segment."""

    name: str


_Item: TypeAlias = str | _Slot  # a str item is exactly one literal character
_Segment: TypeAlias = tuple[_Item, ...]


class Pattern:
    """A parsed ref pattern such as ``daily/{date}`` or ``events/date={date}/hour={hour}``.

    Literal text must follow the ref rules (``actors._refs``); ``{name}`` placeholders (Python identifiers,
    each at most once) match one or more characters within one segment. There is no literal brace: refs cannot
    contain one. Construction raises :class:`GraphError` naming the pattern and the problem.
    """

    __slots__ = ("_head", "_regex", "_slashes", "names", "scheme", "segments", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise GraphError(f"a pattern must be a str, got {type(text).__name__} {text!r}")
        self.text = text
        items, names = _tokenize(text)
        self.names: tuple[str, ...] = names
        prefix = "".join(_literal_prefix(items))
        scheme = _SCHEME_RE.match(prefix)
        self.scheme = scheme.group() if scheme else ""
        self.segments: tuple[_Segment, ...] = _split_segments(text, items[len(self.scheme) :])
        _check_literals(text, self.scheme, self.segments)
        self._slashes = len(self.scheme) - len(self.scheme.rstrip("/")) + len(self.segments) - 1
        first = self.scheme.split("/", 1)[0] if self.scheme else None
        if first is None and all(isinstance(item, str) for item in self.segments[0]):
            first = "".join(str(item) for item in self.segments[0])
        self._head = first
        body = "/".join("".join(_item_regex(item) for item in segment) for segment in self.segments)
        self._regex = re.compile(re.escape(self.scheme) + body)
        example = self._example("x")
        try:
            validate_ref(example)
        except InvalidRef as e:  # a literal not in NFC, say
            raise GraphError(f"pattern {text!r} cannot match a valid ref: {e}") from e

    # -- reading

    def match(self, ref: str) -> dict[str, str] | None:
        """The placeholder values if ``ref`` matches, else None. ``ref`` is assumed valid (see validate_ref)."""
        found = self._regex.fullmatch(ref)
        return found.groupdict() if found else None

    def format(self, **params: str) -> str:
        """The ref for these placeholder values (extra params are ignored); a validated ref.

        Raises :class:`GraphError` for a missing value or one that is empty or contains ``/``, and
        :class:`~actors._refs.InvalidRef` if the result breaks a ref rule (e.g. a ``..`` segment).
        """
        parts: list[str] = []
        for segment in self.segments:
            for item in segment:
                if isinstance(item, _Slot):
                    if item.name not in params:
                        given = ", ".join(sorted(params)) or "none"
                        raise GraphError(
                            f"pattern {self.text!r} needs a value for {{{item.name}}} (given: {given}); "
                            f"pass {item.name}=..."
                        )
                    value = params[item.name]
                    if not isinstance(value, str) or not value or "/" in value:
                        raise GraphError(
                            f"pattern {self.text!r}: the value {value!r} for {{{item.name}}} must be a "
                            f"non-empty str without '/'"
                        )
                    parts.append(value)
                else:
                    parts.append(item)
            parts.append("/")
        return validate_ref(self.scheme + "".join(parts[:-1]))

    def common_ref(self, other: Pattern) -> str | None:
        """The shortest valid ref that both patterns match, or None if there is none. Exact."""
        if self.scheme != other.scheme or len(self.segments) != len(other.segments):
            return None
        for mine, theirs in zip(self.segments, other.segments, strict=True):
            if _is_literal(mine) and _is_literal(theirs) and mine != theirs:
                return None
        witnesses: list[str] = []
        for mine, theirs in zip(self.segments, other.segments, strict=True):
            witness = _segment_witness(mine, theirs)
            if witness is None:
                return None
            witnesses.append(witness)
        ref = self.scheme + "/".join(witnesses)
        # Each segment's witness is the shortest, so a too-long one means no common valid ref exists.
        return ref if len(ref) <= MAX_REF_LENGTH else None

    def _example(self, fill: str) -> str:
        return self.scheme + "/".join(
            "".join(fill if isinstance(item, _Slot) else item for item in segment) for segment in self.segments
        )

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash((Pattern, self.text))


def _tokenize(text: str) -> tuple[list[_Item], tuple[str, ...]]:
    items: list[_Item] = []
    names: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "{":
            end = text.find("}", i + 1)
            opening = text.find("{", i + 1)
            if end == -1 or (opening != -1 and opening < end):
                raise GraphError(
                    f"pattern {text!r}: unbalanced '{{' at index {i}; close the placeholder with '}}' "
                    f"(a ref cannot contain a literal brace)"
                )
            inner = text[i + 1 : end]
            name, colon, _ = inner.partition(":")
            if not inner:
                raise GraphError(f"pattern {text!r}: empty placeholder '{{}}' at index {i}; name it, e.g. {{date}}")
            if colon:
                raise GraphError(
                    f"pattern {text!r}: placeholder {{{inner}}} has a ':' spec; only plain {{name}} placeholders "
                    f"are supported (they match one or more characters other than '/'), write {{{name}}}"
                )
            if not name.isidentifier():
                raise GraphError(
                    f"pattern {text!r}: placeholder name {name!r} is not an identifier; use letters, digits "
                    f"and '_', e.g. {{date}}"
                )
            if name in names:
                raise GraphError(
                    f"pattern {text!r}: placeholder {{{name}}} appears more than once; give each placeholder "
                    f"its own name"
                )
            names.append(name)
            items.append(_Slot(name))
            i = end + 1
        elif char == "}":
            raise GraphError(f"pattern {text!r}: unbalanced '}}' at index {i}; open the placeholder with '{{' "
                             f"(a ref cannot contain a literal brace)")
        else:
            items.append(char)
            i += 1
    return items, tuple(names)


def _literal_prefix(items: Sequence[_Item]) -> Iterable[str]:
    for item in items:
        if isinstance(item, _Slot):
            return
        yield item


def _split_segments(text: str, items: Sequence[_Item]) -> tuple[_Segment, ...]:
    if not items:
        where = " after its scheme prefix" if text else ""
        raise GraphError(f"pattern {text!r} is empty{where}; give at least one segment, e.g. 'daily/{{date}}'")
    segments: list[_Segment] = []
    current: list[_Item] = []
    for item in [*items, "/"]:
        if item == "/":
            if not current:
                raise GraphError(
                    f"pattern {text!r}: segment {len(segments) + 1} is empty (a leading, trailing or doubled "
                    f"'/'); remove the extra '/'"
                )
            segments.append(tuple(current))
            current = []
        else:
            current.append(item)
    return tuple(segments)


def _is_literal(segment: _Segment) -> bool:
    return all(isinstance(item, str) for item in segment)


def _check_literals(text: str, scheme: str, segments: Sequence[_Segment]) -> None:
    for number, segment in enumerate(segments, start=1):
        if _is_literal(segment) and "".join(str(item) for item in segment) in (".", ".."):
            raise GraphError(
                f"pattern {text!r}: segment {number} is {''.join(str(i) for i in segment)!r}; '.' and '..' "
                f"are not allowed as segments, rename it"
            )
        for item in segment:
            problem = char_problem(item) if isinstance(item, str) else None
            if problem is not None:
                rule, what, why = problem
                raise GraphError(
                    f"pattern {text!r} contains {what}{f' ({why})' if why else ''}, which no ref may contain "
                    f"[rule: {rule}]; see the ref rules in docs/graph-file.md"
                )
    shortest = len(scheme) + sum(len(segment) for segment in segments) + len(segments) - 1
    if shortest > MAX_REF_LENGTH:
        raise GraphError(
            f"pattern {text[:60]!r}... is too long: its shortest ref has {shortest} characters, the limit is "
            f"{MAX_REF_LENGTH}; shorten its literal text"
        )


def _item_regex(item: _Item) -> str:
    return f"(?P<{item.name}>[^/]+)" if isinstance(item, _Slot) else re.escape(item)


# -- the exact ambiguity check: product automaton of two segment patterns, breadth first.
#
# A segment pattern's automaton state is (position, inside): before item `position`, or inside the placeholder
# at `position` having consumed at least one character. The product also tracks what the segment read so far
# is (0 empty, 1 ".", 2 "..", 3 anything else), because "." and ".." are not valid segments.
# Characters are tried by class: each literal the next step can consume, plus one generic character standing
# for "any other character" (a "." is never better than the generic one, so it is only tried as a literal).

_GENERIC_CHARS = "0123456789xyzXYZ"
_State: TypeAlias = tuple[int, bool, int, bool, int]


def _next_chars(segment: _Segment, position: int, inside: bool) -> tuple[set[str], bool]:
    """(literal characters the next step may consume, whether it may consume any character)."""
    literals: set[str] = set()
    wildcard = inside
    at = position + 1 if inside else position
    if at < len(segment):
        item = segment[at]
        if isinstance(item, _Slot):
            wildcard = True
        else:
            literals.add(item)
    return literals, wildcard


def _step(segment: _Segment, position: int, inside: bool, char: str) -> list[tuple[int, bool]]:
    moves: list[tuple[int, bool]] = []
    if inside:
        moves.append((position, True))
        position += 1
    if position < len(segment):
        item = segment[position]
        if isinstance(item, _Slot):
            moves.append((position, True))
        elif item == char:
            moves.append((position + 1, False))
    return moves


def _accepts(segment: _Segment, position: int, inside: bool) -> bool:
    return position + 1 == len(segment) if inside else position == len(segment)


def _segment_witness(first: _Segment, second: _Segment) -> str | None:
    """The shortest valid segment matched by both segment patterns, or None."""
    start: _State = (0, False, 0, False, 0)
    parents: dict[_State, tuple[_State, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        p, p_in, q, q_in, dots = state
        if dots == 3 and _accepts(first, p, p_in) and _accepts(second, q, q_in):
            chars: list[str] = []
            link = parents[state]
            while link is not None:
                state, char = link
                chars.append(char)
                link = parents[state]
            return "".join(reversed(chars))
        p_lits, p_any = _next_chars(first, p, p_in)
        q_lits, q_any = _next_chars(second, q, q_in)
        candidates = p_lits & q_lits
        if q_any:
            candidates |= p_lits
        if p_any:
            candidates |= q_lits
        if p_any and q_any:
            candidates.add(next(c for c in _GENERIC_CHARS if c not in p_lits | q_lits))
        for char in sorted(candidates):
            next_dots = dots + 1 if char == "." and dots < 3 else 3
            for p2, p2_in in _step(first, p, p_in, char):
                for q2, q2_in in _step(second, q, q_in, char):
                    successor = (p2, p2_in, q2, q2_in, next_dots)
                    if successor not in parents:
                        parents[successor] = (state, char)
                        queue.append(successor)
    return None


# --------------------------------------------------------------------------------------------------------
# Jobs


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


def _is_executor(executor: object) -> bool:
    from ._executors.base import Executor

    return isinstance(executor, Executor)


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


# --------------------------------------------------------------------------------------------------------
# The graph


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
        # dropped when a job is added, bounded by _FOUND_MAX

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
                    if len(self._found) >= _FOUND_MAX:
                        self._found.clear()
                    self._found[ref] = job
                    return job
        patterns = [f"{job.name}: {', '.join(_texts(job))}" for job in self._jobs.values()]
        listing = "; ".join(patterns[:20]) + (f"; and {len(patterns) - 20} more jobs" if len(patterns) > 20 else "")
        raise NoJobForRef(
            ref,
            f"no job of graph {self.name!r} produces {ref!r}; want a ref that matches one of the jobs' "
            f"patterns ({listing or 'the graph has no jobs'})",
        )

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
