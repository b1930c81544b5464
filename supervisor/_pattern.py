"""Ref patterns such as ``daily/{date}``: parsing, matching, formatting, and the exact overlap check.

A :class:`Pattern` is what job outputs and dependency templates are written in. :meth:`Pattern.common_ref` says
whether two patterns can match one ref, exactly, and returns the shortest such ref as a witness; the graph uses it
to prove that exactly one job produces any ref.

Decisions worth knowing:

- A placeholder ``{name}`` matches one or more characters inside one segment (never ``/``); several may share a
  segment (``events/date={date}/hour={hour}``). There is no literal brace: no ref may contain one.
  ``{name:regex}`` is not supported: it would make the ambiguity check inexact.
- A pattern may start with a literal ``scheme://`` prefix like a ref (``s3://bucket/{date}``); a placeholder
  cannot be part of the scheme.
- Two patterns are ambiguous when some *valid* ref (see ``actors._refs``) matches both. The check works per
  segment on the product of the two patterns' automata, also tracking "is this segment ``.`` or ``..``", and
  finds the shortest common ref, which the error message shows as a witness.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeAlias

from actors._refs import _SCHEME_RE, MAX_REF_LENGTH, InvalidRef, char_problem, validate_ref

from ._graph_errors import GraphError

__all__ = ["Pattern"]


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
