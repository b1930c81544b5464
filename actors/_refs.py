"""Partition refs: the names of the things wantbuild builds.

A **partition ref** is a non-empty string of ``/``-separated segments, for example ``daily/2026-11-01``.
The rules, each with a stable code (:attr:`InvalidRef.rule`):

``type``          a ref is a ``str`` (a ``str`` subclass is accepted and returned as a plain ``str``)
``empty``         it is not empty
``too-long``      it has at most :data:`MAX_REF_LENGTH` (1024) characters (code points, not bytes)
``char``          every character is printable and not whitespace (``str.isprintable()`` and not
                  ``str.isspace()``); non-ASCII letters are fine, tabs, newlines, spaces, control and
                  format characters are not
``brace``         no ``{`` or ``}``: they mark a pattern's placeholders (``daily/{date}``), so a ref holding
                  one is a pattern that was never filled in
``confusable``    outside ASCII only letters, marks and digits, and only in their canonical forms: no
                  punctuation or symbol beyond ASCII (U+2011 NON-BREAKING HYPHEN, U+2215 DIVISION SLASH,
                  U+2019 RIGHT SINGLE QUOTATION MARK look like ``-``, ``/``, ``'``) and no compatibility
                  character (one that NFKC normalisation changes: U+FF12 FULLWIDTH DIGIT TWO, U+FB01
                  LATIN SMALL LIGATURE FI, U+00B2 SUPERSCRIPT TWO)
``not-nfc``       the ref is in Unicode normalisation form NFC, so that one name has one spelling
                  (``é`` as one code point, not ``e`` + U+0301 COMBINING ACUTE ACCENT)
``empty-segment`` no segment is empty: no leading, trailing or doubled ``/``
``dot-segment``   no segment is ``.`` or ``..`` (they would read as paths that climb out of a folder)

Why: a ref is an identity. Two refs that look the same must be the same partition, or a want typed by hand
builds a second copy next to the first. Wantbuild refuses look-alikes rather than normalising them, because
jobs receive refs verbatim (as file names, keys, arguments) and a silently rewritten ref would not be the one
the caller passed. Letters of other scripts stay allowed (``données/été``); letters of different scripts that
look alike (U+0061 LATIN SMALL LETTER A, U+0430 CYRILLIC SMALL LETTER A) are not detected. Every error names
the character by code point and Unicode name.

**Scheme prefix.** A ref may start with one URL-style scheme prefix ``scheme://``, where ``scheme`` is
``[A-Za-z][A-Za-z0-9+.-]*`` (RFC 3986). The prefix counts as one unit, so the empty "segment" between its two
slashes is allowed there and only there: ``s3://bucket/events/date=2026-11-01`` is valid and its segments
after the prefix are ``bucket``, ``events``, ``date=2026-11-01``. At least one segment must follow the
prefix (``s3://`` alone is invalid), and ``file:///x`` is invalid (empty first segment after the prefix).

:func:`validate_ref` runs on every want, so a valid ref is accepted by one precompiled regular expression and
two C-level string checks; only a ref that fails them goes through the slow path that names the broken rule.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from eventlog._errors import WantbuildError

__all__ = ["MAX_REF_LENGTH", "InvalidRef", "char_problem", "describe_char", "validate_ref", "validate_refs"]

MAX_REF_LENGTH = 1024
"""The longest ref accepted, in characters (Unicode code points)."""

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_SCHEME_RE = re.compile(_SCHEME)
# One segment: one or more non-whitespace characters other than "/" and braces, and not exactly "." or "..".
# (The fast path only sees ASCII refs; the explaining path checks everything else.)
_SEGMENT = r"(?!\.\.?(?:/|\Z))[^\s/{}]+"
_VALID_RE = re.compile(rf"(?:{_SCHEME})?{_SEGMENT}(?:/{_SEGMENT})*")

_FIXES = {
    "type": "pass the ref as a string",
    "empty": "give the partition a name such as 'daily/2026-11-01'",
    "too-long": f"use shorter segments (at most {MAX_REF_LENGTH} characters in all)",
    "char": "use only printable non-space characters (replace spaces with '_' or '-')",
    "brace": "fill in the placeholder; a ref cannot contain '{' or '}'",
    "confusable": "write the ASCII character it imitates; outside ASCII a ref may contain only letters, marks "
                  "and digits, in their canonical forms",
    "not-nfc": "normalise it to NFC, e.g. unicodedata.normalize('NFC', ref)",
    "empty-segment": "remove the extra '/' (only a leading 'scheme://' may contain '//')",
    "dot-segment": "rename the segment; '.' and '..' are not allowed as segments",
    "not-a-collection": "wrap a single ref in a list: ['daily/2026-11-01']",
    "no-refs": "give at least one ref",
    "duplicate": "list each ref once",
}


def _shown(ref: object) -> str:
    """``repr`` of a ref for a message, shortened if huge so one bad input cannot flood the log."""
    text = repr(ref)
    if len(text) > 80:
        size = f" ({len(ref)} characters)" if isinstance(ref, str) else ""
        return f"{text[:60]}...{text[-10:]}{size}"
    return text


class InvalidRef(WantbuildError, ValueError):
    """A partition ref (or a list of them) breaks one of the rules in this module's docstring.

    ``ref`` is the offending value (for a list: the list), ``rule`` the stable code of the broken rule.
    """

    def __init__(self, ref: object, rule: str, problem: str) -> None:
        self.ref = ref
        self.rule = rule
        self.problem = problem
        super().__init__(f"invalid partition ref {_shown(ref)}: {problem} [rule: {rule}]; {_FIXES[rule]}")

    def __reduce__(self) -> tuple[type[InvalidRef], tuple[object, str, str]]:
        return type(self), (self.ref, self.rule, self.problem)


# Non-ASCII punctuation and symbols that imitate an ASCII character but that NFKC leaves alone.
_LOOKS_LIKE = {"\u2212": "-", "\u2215": "/", "\u2044": "/", "\u29f8": "/", "\u2236": ":", "\u00b7": ".",
               "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"',
               "\u2033": '"', "\u00b4": "'", "\u02cb": "`"}


def describe_char(char: str) -> str:
    """``U+2011 NON-BREAKING HYPHEN``: a character as an error message names it."""
    return f"U+{ord(char):04X} {unicodedata.name(char, '(unnamed)')}"


def char_problem(char: str) -> tuple[str, str, str] | None:
    """The rule one character of a ref breaks, as ``(rule, the character, why)``, or None (module docstring)."""
    if not char.isprintable() or char.isspace():
        what = "whitespace" if char.isspace() else "a non-printable character"
        return "char", f"{what} ({describe_char(char)})", ""
    if char in "{}":
        return "brace", repr(char), "a placeholder's brace, as in the pattern 'daily/{date}'"
    if char.isascii():
        return None
    compat = unicodedata.normalize("NFKC", char)
    category = unicodedata.category(char)
    if category[0] in "PS":
        twin = compat if compat.isascii() else _LOOKS_LIKE.get(char, "-" if category == "Pd" else "")
        kind = "punctuation" if category[0] == "P" else "a symbol"
        like = f" that looks like {twin!r}" if twin else ""
        return "confusable", describe_char(char), f"{kind} outside ASCII{like}"
    if compat != char:
        return "confusable", describe_char(char), f"a compatibility form of {compat!r}"
    return None


def _find_problem(ref: object) -> tuple[str, str] | None:
    """The first rule ``ref`` breaks as ``(rule, problem)``, or None. The slow, explaining path."""
    if not isinstance(ref, str):
        return "type", f"a ref must be a str, got {type(ref).__name__}"
    if not ref:
        return "empty", "a ref must not be empty"
    if len(ref) > MAX_REF_LENGTH:
        return "too-long", f"it is {len(ref)} characters long, the limit is {MAX_REF_LENGTH}"
    for index, char in enumerate(ref):
        found = char_problem(char)
        if found is not None:
            rule, what, why = found
            return rule, f"it contains {what} at index {index}" + (f" ({why})" if why else "")
    if not ref.isascii() and not unicodedata.is_normalized("NFC", ref):
        nfc = unicodedata.normalize("NFC", ref)
        start = next((i for i, (a, b) in enumerate(zip(ref, nfc, strict=False)) if a != b), 0)
        index = next((i for i in range(start, len(ref)) if unicodedata.category(ref[i])[0] == "M"), start)
        return "not-nfc", (f"it is not in Unicode normalisation form NFC: {describe_char(ref[index])} at index "
                           f"{index} should be composed with what precedes it; in NFC it is {nfc!r}")
    scheme = _SCHEME_RE.match(ref)
    body = ref[scheme.end() :] if scheme else ref
    offset = scheme.end() if scheme else 0
    if not body:
        return "empty-segment", f"no segment follows the scheme prefix {ref!r}"
    position = offset
    after = f" after the scheme prefix {ref[:offset]!r}" if scheme else ""
    for number, segment in enumerate(body.split("/"), start=1):
        if not segment:
            return "empty-segment", f"segment {number}{after} (at index {position}) is empty"
        if segment in (".", ".."):
            return "dot-segment", f"segment {number}{after} is {segment!r}"
        position += len(segment) + 1
    return None


def validate_ref(ref: object) -> str:
    """Return ``ref`` if it is a valid partition ref, else raise :class:`InvalidRef` naming the rule.

    Called on every want and every dependency, so valid ASCII input takes a fast path (one regex match).
    """
    if (type(ref) is str and len(ref) <= MAX_REF_LENGTH and ref.isascii() and ref.isprintable()
            and _VALID_RE.fullmatch(ref)):
        return ref
    problem = _find_problem(ref)
    if problem is not None:
        raise InvalidRef(ref, *problem)
    # Only a valid non-ASCII ref or a str subclass gets here: returned as a plain str.
    return str(ref)


def validate_refs(refs: Iterable[object]) -> tuple[str, ...]:
    """Validate every ref of a non-empty collection without duplicates; return them as a tuple, in order.

    A bare string is refused (iterating it would yield its characters), as are an empty collection and
    duplicates (named in the message).
    """
    if isinstance(refs, str | bytes):
        problem = f"expected a collection of refs, got a {type(refs).__name__}"
        raise InvalidRef(refs, "not-a-collection", problem)
    result = tuple(validate_ref(ref) for ref in refs)
    if not result:
        raise InvalidRef(refs, "no-refs", "the collection of refs is empty")
    if len(set(result)) != len(result):
        seen: set[str] = set()
        repeated: set[str] = set()
        for ref in result:
            (repeated if ref in seen else seen).add(ref)
        duplicates = sorted(repeated)
        listed = ", ".join(_shown(ref) for ref in duplicates[:10])
        more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        raise InvalidRef(result, "duplicate", f"duplicated: {listed}{more}")
    return result
