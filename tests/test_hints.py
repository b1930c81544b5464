"""The shared message helpers: did-you-mean hints and the one error inside exception groups."""

from __future__ import annotations

import asyncio

import pytest

from supervisor import did_you_mean, sole_error, valid_choices


@pytest.mark.parametrize(
    ("word", "choices", "n", "expected"),
    [
        pytest.param("dayly", ["raw", "daily"], 1, "did you mean 'daily'?", id="close"),
        pytest.param("zzz", ["raw", "daily"], 1, "", id="nothing-close"),
        pytest.param("dail", ["daily", "daile", "raw"], 3, "did you mean 'daily', 'daile'?", id="several"),
    ],
)
def test_did_you_mean(word: str, choices: list[str], n: int, expected: str) -> None:
    """The closest choices, quoted, or nothing when none is close."""
    assert expected == did_you_mean(word, choices, n=n)


def test_valid_choices_lists_every_choice_after_the_hint() -> None:
    """The hint (if any) then every choice, under the given label."""
    assert valid_choices("jobs", ("graph", "job")) == "did you mean 'job'? valid: graph, job"
    assert valid_choices("zzz", iter(["a", "b"]), label="known") == "known: a, b"


def test_sole_error_finds_the_one_error_among_cancellations() -> None:
    """Nested groups with one real error and cancellations give that error."""
    boom = ValueError("boom")
    eg = BaseExceptionGroup("outer", [asyncio.CancelledError(), BaseExceptionGroup("inner", [boom])])
    assert sole_error(eg) is boom
    assert sole_error(boom) is boom


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ExceptionGroup("two", [ValueError("a"), KeyError("b")]), id="two-errors"),
        pytest.param(BaseExceptionGroup("none", [asyncio.CancelledError()]), id="only-cancellations"),
        pytest.param(asyncio.CancelledError(), id="a-cancellation"),
    ],
)
def test_sole_error_is_none_unless_exactly_one(exc: BaseException) -> None:
    """No single error to name: None (the caller keeps the group)."""
    assert sole_error(exc) is None
