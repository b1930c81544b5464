"""Partition refs: the rules, their messages, and the fast path agreeing with the explaining one."""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors._refs import MAX_REF_LENGTH, InvalidRef, _find_problem, char_problem, validate_ref, validate_refs
from eventlog._errors import WantbuildError

# -- strategies

_ascii = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "/{}")
ref_chars = st.sampled_from(_ascii) | st.characters(codec="utf-8").filter(
    lambda c: c != "/" and char_problem(c) is None
)
segments = st.text(ref_chars, min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and unicodedata.is_normalized("NFC", s)
)
schemes = st.from_regex(r"[A-Za-z][A-Za-z0-9+.\-]{0,5}://", fullmatch=True)


@st.composite
def valid_refs(draw: st.DrawFn) -> str:
    scheme = draw(st.one_of(st.just(""), schemes))
    return scheme + "/".join(draw(st.lists(segments, min_size=1, max_size=6)))


bad_chars = st.sampled_from([" ", "\t", "\n", "\r", "\x00", "\x7f", "\u00a0", "\u200b", "\u2028", "\u3000"])


# -- examples


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("daily/2026-11-01", id="two-segments"),
        pytest.param("x", id="one-segment"),
        pytest.param("s3://bucket/events/date=2026-11-01", id="scheme"),
        pytest.param("s3://bucket", id="scheme-one-segment"),
        pytest.param("git+ssh://host/repo", id="scheme-with-plus"),
        pytest.param("a/.../b", id="three-dots"),
        pytest.param(".hidden/..x", id="dot-prefixed"),
        pytest.param("données/été", id="non-ascii"),
        pytest.param("a:b/c=d,e", id="punctuation"),
        pytest.param("x" * MAX_REF_LENGTH, id="max-length"),
    ],
)
def test_valid_examples(ref: str) -> None:
    """Refs that follow every rule are returned unchanged."""
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "rule", "fragment"),
    [
        pytest.param(None, "type", "must be a str, got NoneType", id="none"),
        pytest.param(b"daily/x", "type", "got bytes", id="bytes"),
        pytest.param("", "empty", "must not be empty", id="empty"),
        pytest.param("x" * (MAX_REF_LENGTH + 1), "too-long", "1025 characters long, the limit is 1024", id="long"),
        pytest.param("daily/2026 11", "char", "whitespace (U+0020 SPACE) at index 10", id="space"),
        pytest.param("a\tb", "char", "U+0009", id="tab"),
        pytest.param("a\x00b", "char", "non-printable character (U+0000 (unnamed))", id="nul"),
        pytest.param("daily/{d}", "brace", "contains '{' at index 6 (a placeholder's brace", id="unfilled"),
        pytest.param("x/a}", "brace", "contains '}' at index 3", id="closing-brace"),
        pytest.param("daily/2026\u201111\u201102", "confusable",
                     "U+2011 NON-BREAKING HYPHEN at index 10 (punctuation outside ASCII that looks like '-')",
                     id="non-breaking-hyphen"),
        pytest.param("a\u2215b", "confusable", "U+2215 DIVISION SLASH at index 1 (a symbol outside ASCII that looks "
                     "like '/')", id="division-slash"),
        pytest.param("x/\uff12", "confusable", "U+FF12 FULLWIDTH DIGIT TWO at index 2 (a compatibility form of '2')",
                     id="fullwidth-digit"),
        pytest.param("x/\u20ac", "confusable", "U+20AC EURO SIGN at index 2 (a symbol outside ASCII)", id="symbol"),
        pytest.param("x/cafe\u0301", "not-nfc", "U+0301 COMBINING ACUTE ACCENT at index 6 should be composed with "
                     "what precedes it; in NFC it is 'x/caf\u00e9'", id="decomposed"),
        pytest.param("a//b", "empty-segment", "segment 2 (at index 2) is empty", id="double-slash"),
        pytest.param("/a", "empty-segment", "segment 1 (at index 0) is empty", id="leading-slash"),
        pytest.param("a/", "empty-segment", "segment 2 (at index 2) is empty", id="trailing-slash"),
        pytest.param("s3://", "empty-segment", "no segment follows the scheme prefix", id="scheme-only"),
        pytest.param("file:///x", "empty-segment", "segment 1 after the scheme prefix 'file://'", id="triple-slash"),
        pytest.param("1a://x", "empty-segment", "segment 2 (at index 4) is empty", id="bad-scheme"),
        pytest.param("a/./b", "dot-segment", "segment 2 is '.'", id="dot"),
        pytest.param("a/..", "dot-segment", "segment 2 is '..'", id="dotdot"),
        pytest.param("s3://..", "dot-segment", "segment 1 after the scheme prefix 's3://' is '..'", id="scheme-dotdot"),
    ],
)
def test_invalid_examples(ref: object, rule: str, fragment: str) -> None:
    """Each broken rule is reported with its code, the problem and the offending ref."""
    with pytest.raises(InvalidRef) as caught:
        validate_ref(ref)
    assert caught.value.rule == rule
    assert fragment in str(caught.value)
    assert f"[rule: {rule}]" in str(caught.value)
    assert str(caught.value).startswith(f"invalid partition ref {repr(ref)[:20]}")


def test_invalid_ref_is_a_wantbuild_value_error() -> None:
    """InvalidRef is catchable as WantbuildError and as ValueError."""
    with pytest.raises(InvalidRef) as caught:
        validate_ref("a//b")
    assert isinstance(caught.value, WantbuildError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.ref == "a//b"


def test_message_truncates_a_huge_ref() -> None:
    """A huge invalid ref is shortened in the message, with its length given."""
    ref = "y" * 100_000
    with pytest.raises(InvalidRef) as caught:
        validate_ref(ref)
    message = str(caught.value)
    assert len(message) < 400
    assert "(100000 characters)" in message


def test_message_says_how_to_fix() -> None:
    """Messages end with a fix, not only the problem."""
    with pytest.raises(InvalidRef, match=r"remove the extra '/'"):
        validate_ref("a//b")
    with pytest.raises(InvalidRef, match=r"replace spaces with '_' or '-'"):
        validate_ref("a b")


def test_str_subclass_is_returned_as_plain_str() -> None:
    """A valid str subclass is accepted and returned as a plain str."""

    class Ref(str):
        pass

    result = validate_ref(Ref("daily/x"))
    assert (type(result), result) == (str, "daily/x")


def test_fast_path_is_fast() -> None:
    """Validating a typical valid ref takes microseconds (it runs on every want)."""
    refs = [f"events/date=2026-11-{day:02d}/hour={hour:02d}" for day in range(1, 29) for hour in range(24)]
    start = time.perf_counter()
    for _ in range(20):
        for ref in refs:
            validate_ref(ref)
    per_ref = (time.perf_counter() - start) / (20 * len(refs))
    assert per_ref < 20e-6


# -- properties


@given(valid_refs())
def test_generated_valid_refs_are_accepted(ref: str) -> None:
    """Any ref built from valid segments, with or without a scheme prefix, is accepted unchanged."""
    assert validate_ref(ref) == ref


@given(valid_refs(), bad_chars, st.integers(min_value=0))
def test_bad_character_is_rejected(ref: str, char: str, where: int) -> None:
    """Inserting whitespace or a non-printable character anywhere breaks the 'char' rule."""
    at = where % (len(ref) + 1)
    with pytest.raises(InvalidRef) as caught:
        validate_ref(ref[:at] + char + ref[at:])
    assert caught.value.rule == "char"
    assert "characters" in str(caught.value)


@given(valid_refs(), st.sampled_from(["leading", "trailing", "double"]))
def test_empty_segment_is_rejected(ref: str, where: str) -> None:
    """A leading, trailing or doubled '/' breaks the 'empty-segment' rule."""
    bad = {"leading": "/" + ref, "trailing": ref + "/", "double": ref + "//x"}[where]
    with pytest.raises(InvalidRef) as caught:
        validate_ref(bad)
    assert caught.value.rule == "empty-segment"
    assert "is empty" in str(caught.value)


@given(valid_refs(), st.sampled_from([".", ".."]), st.booleans())
def test_dot_segment_is_rejected(ref: str, dots: str, at_end: bool) -> None:
    """A '.' or '..' segment breaks the 'dot-segment' rule."""
    bad = f"{ref}/{dots}" if at_end else f"{ref}/{dots}/x"
    with pytest.raises(InvalidRef) as caught:
        validate_ref(bad)
    assert caught.value.rule == "dot-segment"
    assert f"is {dots!r}" in str(caught.value)


@given(valid_refs())
def test_too_long_is_rejected(ref: str) -> None:
    """A ref longer than 1024 characters breaks the 'too-long' rule."""
    bad = (ref + "/") * (MAX_REF_LENGTH // (len(ref) + 1) + 1) + ref
    with pytest.raises(InvalidRef) as caught:
        validate_ref(bad)
    assert caught.value.rule == "too-long"
    assert f"the limit is {MAX_REF_LENGTH}" in str(caught.value)


@given(st.one_of(st.integers(), st.none(), st.binary(), st.lists(st.text()), st.floats()))
def test_non_str_is_rejected(value: object) -> None:
    """Anything but a str breaks the 'type' rule."""
    with pytest.raises(InvalidRef) as caught:
        validate_ref(value)
    assert caught.value.rule == "type"


@given(st.text(st.sampled_from("ab./: \t\x00é{}\u0301\u2011\uff12"), max_size=12)
       | st.from_regex(r"[a-z]{1,3}://[a-z./]{0,6}"))
def test_fast_path_agrees_with_explaining_path(text: str) -> None:
    """validate_ref accepts exactly the strings in which the explaining path finds no broken rule."""
    problem = _find_problem(text)
    if problem is None:
        assert validate_ref(text) == text
    else:
        with pytest.raises(InvalidRef) as caught:
            validate_ref(text)
        assert caught.value.rule == problem[0]


@given(valid_refs(), st.characters(codec="utf-8", categories=["Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk",
                                                                "So"]).filter(lambda c: not c.isascii()),
       st.integers(min_value=0))
def test_punctuation_and_symbols_beyond_ascii_are_rejected(ref: str, char: str, where: int) -> None:
    """Inserting any non-ASCII punctuation or symbol anywhere breaks the 'confusable' rule, naming it."""
    at = where % (len(ref) + 1)
    with pytest.raises(InvalidRef) as caught:
        validate_ref(ref[:at] + char + ref[at:])
    assert caught.value.rule == "confusable"
    assert f"U+{ord(char):04X} {unicodedata.name(char)} at index {at}" in str(caught.value)


@given(valid_refs(), st.sampled_from("\u00e9\u00c5\u00f1\u00fc\u00e7\u1ec7"))
def test_a_decomposed_ref_is_rejected_and_its_nfc_form_accepted(valid: str, accented: str) -> None:
    """A ref written decomposed is refused (rule 'not-nfc', giving the NFC spelling); the NFC one is valid."""
    ref = unicodedata.normalize("NFC", valid + accented)
    assert validate_ref(ref) == ref
    nfd = unicodedata.normalize("NFD", ref)
    with pytest.raises(InvalidRef) as caught:
        validate_ref(nfd)
    assert caught.value.rule == "not-nfc"
    assert f"in NFC it is {ref!r}" in str(caught.value)


# -- validate_refs


@given(st.lists(valid_refs(), min_size=1, max_size=4, unique=True))
def test_validate_refs_returns_a_tuple_in_order(refs: list[str]) -> None:
    """A non-empty collection of distinct valid refs comes back as a tuple in the same order."""
    assert validate_refs(iter(refs)) == tuple(refs)


def test_validate_refs_rejects_an_empty_collection() -> None:
    """An empty collection is refused."""
    with pytest.raises(InvalidRef, match=r"the collection of refs is empty") as caught:
        validate_refs([])
    assert caught.value.rule == "no-refs"


def test_validate_refs_rejects_a_bare_string() -> None:
    """A bare str is refused rather than iterated character by character."""
    with pytest.raises(InvalidRef, match=r"expected a collection of refs, got a str.*wrap a single ref in a list"):
        validate_refs("daily/x")


def test_validate_refs_names_the_duplicates() -> None:
    """Duplicates are refused, and each duplicated ref is named once."""
    with pytest.raises(InvalidRef) as caught:
        validate_refs(["a/1", "b/1", "a/1", "c/1", "b/1", "a/1"])
    assert caught.value.rule == "duplicate"
    assert "duplicated: 'a/1', 'b/1' [rule: duplicate]" in str(caught.value)


def test_validate_refs_reports_the_first_invalid_ref() -> None:
    """An invalid member is reported with its own rule."""
    with pytest.raises(InvalidRef) as caught:
        validate_refs(["ok/1", "bad//1"])
    assert (caught.value.ref, caught.value.rule) == ("bad//1", "empty-segment")
