"""The job graph: patterns, the exact ambiguity check, jobs, lookups, fingerprints and the TOML graph file."""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from actors._refs import InvalidRef, validate_ref
from eventlog._errors import WantbuildError
from supervisor._graph import (
    Graph,
    GraphError,
    Job,
    JobCallable,
    NoJobForRef,
    Pattern,
    Retry,
    TemplateDeps,
    UnknownJob,
)
from supervisor._graph_toml import load_graph


async def noop(ctx: object) -> None:
    """A job that does nothing."""


def blocking(ctx: object) -> None:
    """A job that is not async."""


def command_job(name: str, outputs: str | Sequence[str], **kwargs: Any) -> Job:
    return Job.create(name, outputs=outputs, command=["true"], **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Patterns


def test_pattern_match_and_format() -> None:
    """A pattern matches refs into params and formats params back into the same ref."""
    pattern = Pattern("events/date={date}/hour={hour}")
    params = pattern.match("events/date=2026-11-01/hour=07")
    assert params == {"date": "2026-11-01", "hour": "07"}
    assert pattern.format(date="2026-11-01", hour="07") == "events/date=2026-11-01/hour=07"
    assert pattern.names == ("date", "hour")
    assert (str(pattern), repr(pattern)) == (
        "events/date={date}/hour={hour}",
        "Pattern('events/date={date}/hour={hour}')",
    )


@pytest.mark.parametrize(
    ("pattern", "ref"),
    [
        pytest.param("daily/{date}", "daily/2026/11", id="placeholder-never-spans-slash"),
        pytest.param("daily/{date}", "daily/", id="placeholder-not-empty"),
        pytest.param("daily/{date}", "weekly/2026", id="literal-differs"),
        pytest.param("x/{a}-{b}", "x/ab", id="literal-between-placeholders-missing"),
        pytest.param("s3://b/{k}", "s4://b/k", id="scheme-differs"),
    ],
)
def test_pattern_does_not_match(pattern: str, ref: str) -> None:
    """A pattern refuses refs its literals or placeholders cannot cover."""
    assert Pattern(pattern).match(ref) is None


def test_pattern_with_scheme() -> None:
    """A literal scheme prefix matches and formats as literal text."""
    pattern = Pattern("s3://bucket/{key}")
    assert pattern.match("s3://bucket/a.csv") == {"key": "a.csv"}
    assert pattern.format(key="a.csv") == "s3://bucket/a.csv"


def test_pattern_equality_is_by_text() -> None:
    """Patterns compare and hash by their text."""
    assert Pattern("a/{x}") == Pattern("a/{x}")
    assert Pattern("a/{x}") != Pattern("a/{y}")
    assert len({Pattern("a/{x}"), Pattern("a/{x}")}) == 1


@pytest.mark.parametrize(
    ("params", "error", "fragment"),
    [
        pytest.param({}, GraphError, "needs a value for {date} (given: none)", id="missing"),
        pytest.param({"date": ""}, GraphError, "must be a non-empty str without '/'", id="empty"),
        pytest.param({"date": "a/b"}, GraphError, "must be a non-empty str without '/'", id="slash"),
        pytest.param({"date": ".."}, InvalidRef, "[rule: dot-segment]", id="dotdot"),
        pytest.param({"date": "{date}"}, InvalidRef, "[rule: brace]", id="unfilled"),
        pytest.param({"date": "2026\u201111"}, InvalidRef, "U+2011 NON-BREAKING HYPHEN", id="confusable"),
    ],
)
def test_pattern_format_errors(params: dict[str, str], error: type[Exception], fragment: str) -> None:
    """format() refuses missing or bad values and results that are not valid refs."""
    with pytest.raises(error) as caught:
        Pattern("daily/{date}").format(**params)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("daily/{date", "unbalanced '{' at index 6", id="unclosed"),
        pytest.param("daily/{a{b}", "unbalanced '{' at index 6", id="nested"),
        pytest.param("daily/date}", "unbalanced '}' at index 10; open the placeholder with '{'", id="stray-close"),
        pytest.param("t/{{raw}}/{x}", "unbalanced '{' at index 2", id="escaped-brace"),
        pytest.param("daily\u2011x/{d}", "contains U+2011 NON-BREAKING HYPHEN (punctuation outside ASCII that looks "
                     "like '-'), which no ref may contain [rule: confusable]", id="confusable-literal"),
        pytest.param("cafe\u0301/{d}", "cannot match a valid ref", id="literal-not-nfc"),
        pytest.param("daily/{}", "empty placeholder '{}' at index 6", id="empty-name"),
        pytest.param("x/{d}/{d}", "placeholder {d} appears more than once", id="repeated"),
        pytest.param("x/{1d}", "placeholder name '1d' is not an identifier", id="bad-name"),
        pytest.param("x/{d:[0-9]+}", "only plain {name} placeholders are supported", id="regex-spec"),
        pytest.param("a//{d}", "segment 2 is empty", id="empty-segment"),
        pytest.param("/a/{d}", "segment 1 is empty", id="leading-slash"),
        pytest.param("a/{d}/", "segment 3 is empty", id="trailing-slash"),
        pytest.param("../{d}", "segment 1 is '..'", id="dotdot-segment"),
        pytest.param("a b/{d}", "contains whitespace (U+0020 SPACE), which no ref may contain [rule: char]",
                     id="space"),
        pytest.param("", "pattern '' is empty", id="empty"),
        pytest.param("s3://", "is empty after its scheme prefix", id="scheme-only"),
        pytest.param("{s}://x", "segment 2 is empty", id="placeholder-scheme"),
        pytest.param("x" * 1025 + "/{d}", "is too long", id="too-long"),
    ],
)
def test_malformed_patterns(text: str, fragment: str) -> None:
    """Malformed patterns raise GraphError naming the pattern and the problem."""
    with pytest.raises(GraphError) as caught:
        Pattern(text)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"pattern {text[:20]!r}"[:-1])


# ---------------------------------------------------------------------------------------------------------
# The ambiguity check


@pytest.mark.parametrize(
    ("first", "second", "witness"),
    [
        pytest.param("x/{d}", "x/2026-{m}", "x/2026-0", id="prefix"),
        pytest.param("a{x}b", "{y}", "a0b", id="literal-around"),
        pytest.param("e/date={d}/hour={h}", "e/{x}/hour=0{y}", "e/date=0/hour=00", id="several-segments"),
        pytest.param("{a}.", "{b}", "0.", id="dot-suffix"),
        pytest.param(".{a}", "{b}.", "...", id="dots-only-if-three"),
        pytest.param("s3://b/{k}", "s3://{c}/x", "s3://b/x", id="scheme"),
        pytest.param("a/b", "a/b", "a/b", id="identical-literals"),
        pytest.param("{a}{b}", "{c}", "00", id="adjacent-placeholders"),
    ],
)
def test_common_ref_examples(first: str, second: str, witness: str) -> None:
    """Overlapping patterns yield their shortest common valid ref, in either order."""
    assert Pattern(first).common_ref(Pattern(second)) == witness
    common = Pattern(second).common_ref(Pattern(first))
    assert common is not None
    assert Pattern(first).match(common) is not None
    assert Pattern(second).match(common) is not None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("daily/{d}", "weekly/{d}", id="literal-segments-differ"),
        pytest.param("x/{d}", "x/{d}/y", id="segment-count"),
        pytest.param("x/a{d}", "x/b{d}", id="literal-prefix-differs"),
        pytest.param("x/{d}a", "x/{d}b", id="literal-suffix-differs"),
        pytest.param("s3://{k}", "gs://{k}", id="schemes-differ"),
        pytest.param("s3://b/{k}", "{a}/b/{k}", id="scheme-vs-none"),
        pytest.param("x/{a}.", "x/a", id="placeholder-needs-a-character"),
        pytest.param("A" * 600 + "{a}", "{b}" + "B" * 600, id="common-only-beyond-1024"),
    ],
)
def test_disjoint_patterns(first: str, second: str) -> None:
    """Patterns with no valid ref in common are not ambiguous."""
    assert Pattern(first).common_ref(Pattern(second)) is None
    assert Pattern(second).common_ref(Pattern(first)) is None


_LETTERS = "a.-"
_ALPHABET = _LETTERS + "0"  # the literals plus one character standing for every other one
_MAX_LEN = 6
_STRINGS = ["".join(chars) for n in range(1, _MAX_LEN + 1) for chars in itertools.product(_ALPHABET, repeat=n)]


@st.composite
def pattern_texts(draw: st.DrawFn) -> list[str]:
    """1-2 segments of 1-3 items each: literal characters from a small alphabet and placeholders."""
    names = iter(f"p{i}" for i in range(100))
    segments = []
    for _ in range(draw(st.integers(1, 2))):
        items = draw(st.lists(st.sampled_from([*_LETTERS, "{}"]), min_size=1, max_size=3))
        segments.append("".join(f"{{{next(names)}}}" if item == "{}" else item for item in items))
    return segments


def brute_force_common(first: list[str], second: list[str]) -> bool:
    """Whether some valid ref matches both, searching every segment over the alphabet up to _MAX_LEN."""
    if len(first) != len(second):
        return False
    for mine, theirs in zip(first, second, strict=True):
        a, b = Pattern(mine), Pattern(theirs)
        if not any(s not in (".", "..") and a.match(s) is not None and b.match(s) is not None for s in _STRINGS):
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(pattern_texts(), pattern_texts())
def test_ambiguity_matches_brute_force(first: list[str], second: list[str]) -> None:
    """common_ref finds a ref iff brute force does, and its witness is valid and matched by both patterns."""
    try:
        a, b = Pattern("/".join(first)), Pattern("/".join(second))
    except GraphError:
        assume(False)
        raise
    witness = a.common_ref(b)
    assert (witness is not None) == brute_force_common(first, second)
    if witness is not None:
        assert validate_ref(witness) == witness
        assert a.match(witness) is not None
        assert b.match(witness) is not None
    assert (b.common_ref(a) is None) == (witness is None)


@st.composite
def disjoint_graphs(draw: st.DrawFn) -> tuple[Graph, str, str]:
    """A graph of jobs with generated, pairwise disjoint patterns; one job's name and a ref it produces."""
    graph = Graph()
    chunks = st.sampled_from(["a", "b", "-", ".", "{}", "{}"])
    for number in range(draw(st.integers(1, 6))):
        names = iter(f"p{i}" for i in range(100))
        segments = [
            "".join(f"{{{next(names)}}}" if c == "{}" else c for c in draw(st.lists(chunks, min_size=1, max_size=3)))
            for _ in range(draw(st.integers(1, 3)))
        ]
        scheme = draw(st.sampled_from(["", "", "s3://"]))
        try:
            graph.add_job(command_job(f"j{number}", scheme + "/".join(segments)))
        except GraphError:
            continue
    assume(len(graph) > 0)
    job = draw(st.sampled_from(list(graph.jobs().values())))
    values = st.text("ab-.0", min_size=1, max_size=3)
    params = {name: draw(values) for name in job.outputs[0].names}
    try:
        ref = job.outputs[0].format(**params)
    except InvalidRef:
        assume(False)
        raise
    return graph, job.name, ref


@settings(max_examples=150, deadline=None)
@given(disjoint_graphs())
def test_job_for_finds_the_producing_job(case: tuple[Graph, str, str]) -> None:
    """job_for returns the job whose pattern produced the ref, and exactly one job's pattern matches it."""
    graph, name, ref = case
    assert graph.job_for(ref)[0].name == name
    matching = [job.name for job in graph.jobs().values() if job.params(ref) is not None]
    assert matching == [name]


# ---------------------------------------------------------------------------------------------------------
# Retry


@pytest.mark.parametrize(
    ("retry", "attempt", "delay"),
    [
        pytest.param(Retry(), 1, 1.0, id="first"),
        pytest.param(Retry(backoff=1.5, factor=2.0), 3, 6.0, id="exponential"),
        pytest.param(Retry(backoff=10, factor=3, max_backoff=50), 3, 50.0, id="capped"),
        pytest.param(Retry(backoff=2, factor=1), 5, 2.0, id="constant"),
        pytest.param(Retry(backoff=1, factor=10, max_backoff=300), 10_000, 300.0, id="overflow-capped"),
    ],
)
def test_retry_delay(retry: Retry, attempt: int, delay: float) -> None:
    """delay(n) is backoff * factor ** (n - 1), at most max_backoff."""
    assert retry.delay(attempt) == delay


def test_retry_delay_rejects_attempt_zero() -> None:
    """Attempts are numbered from 1."""
    with pytest.raises(ValueError, match="attempt numbers start at 1"):
        Retry().delay(0)


# ---------------------------------------------------------------------------------------------------------
# Jobs


def test_job_create_builds_a_checked_job() -> None:
    """Job.create parses patterns, turns string deps into templates and retries into a Retry."""
    job = Job.create(
        "daily", outputs="daily/{date}", deps=["raw/{date}"], run=noop, batch=7, concurrency=2, retries=2, backoff=1.5
    )
    assert job.outputs == (Pattern("daily/{date}"),)
    assert job.deps == TemplateDeps((Pattern("raw/{date}"),))
    assert job.retry == Retry(max_attempts=3, backoff=1.5)
    assert (job.batch, job.concurrency, job.run, job.command) == (7, 2, noop, None)
    assert job.params("daily/2026-11-01") == {"date": "2026-11-01"}
    assert job.params("weekly/1") is None


def test_async_callables_of_every_kind_are_accepted() -> None:
    """An async function, a partial of one and an object with an async __call__ are valid runs."""

    class Runner:
        async def __call__(self, ctx: object) -> None:
            """Run."""

    runs: list[JobCallable] = [noop, functools.partial(noop), Runner()]
    for number, run in enumerate(runs):
        assert Job.create(f"j{number}", outputs="x/{a}", run=run).run is run


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param({"batch": 0}, "batch must be an int >= 1", id="batch-zero"),
        pytest.param({"batch": True}, "batch must be an int >= 1", id="batch-bool"),
        pytest.param({"concurrency": 0}, "concurrency must be an int >= 1, or None", id="concurrency-zero"),
        pytest.param({"timeout": -1}, "timeout must be a number of seconds > 0", id="negative-timeout"),
        pytest.param({"timeout": 0}, "timeout must be a number of seconds > 0", id="zero-timeout"),
        pytest.param({"heartbeat_timeout": -5.0}, "heartbeat_timeout must be a number", id="negative-heartbeat"),
        pytest.param({"timeout": float("nan")}, "timeout must be a number", id="nan-timeout"),
        pytest.param({"retries": -1}, "retries must be an int >= 0", id="negative-retries"),
        pytest.param({"backoff": -1}, "backoff must be a number >= 0", id="negative-backoff"),
        pytest.param({"backoff_factor": 0.5}, "backoff_factor must be a number >= 1", id="shrinking-backoff"),
        pytest.param({"max_backoff": -1}, "max_backoff must be a number >= 0", id="negative-max-backoff"),
        pytest.param({"collision_policy": "first"}, "collision_policy must be one of shrink, defer", id="policy"),
        pytest.param({"outputs": []}, "no outputs; give at least one output pattern", id="no-outputs"),
        pytest.param({"outputs": ["x/{a}", "x/{a}"]}, "lists the output pattern 'x/{a}' twice", id="same-twice"),
        pytest.param(
            {"outputs": ["x/{a}", "x/b"]},
            "output patterns 'x/{a}' and 'x/b' can both match 'x/b'",
            id="overlapping-outputs",
        ),
        pytest.param({"outputs": ["x/{"]}, "job 'j': pattern 'x/{': unbalanced", id="bad-pattern"),
        pytest.param({"outputs": [5]}, "job 'j': a pattern must be a str, got int", id="pattern-not-str"),
        pytest.param(
            {"deps": ["raw/{day}"]},
            "the dependency template 'raw/{day}' uses {day}, which the output pattern 'x/{a}' does not have",
            id="template-unknown-param",
        ),
        pytest.param({"deps": "x/{a}"}, "depends on its own output 'x/{a}'", id="template-self"),
        pytest.param({"deps": 5}, "deps must be a function (ref, params) -> refs", id="deps-not-callable"),
        pytest.param({"command": ["true"]}, "has both run and command; give exactly one", id="both"),
        pytest.param({"run": None}, "has neither run and command; give exactly one", id="neither"),
        pytest.param({"run": blocking, "executor": "local"}, "run must be an async function (async def ...)",
                     id="sync-run-local"),
        pytest.param({"executor": "dask"}, "executor must be an executor (DaskExecutor(...)", id="executor-str"),
        pytest.param({"resources": {"gpu": -1}}, "resources: 'gpu' must be a number >= 0", id="resources-negative"),
        pytest.param({"resources": ["gpu"]}, "resources must be a mapping such as", id="resources-not-mapping"),
        pytest.param({"run": None, "command": "true x"}, "command must be an argv list such as", id="command-str"),
        pytest.param({"run": None, "command": []}, "command must be a non-empty argv of str", id="command-empty"),
        pytest.param({"run": None, "command": [""]}, "command must be a non-empty argv of str", id="program-empty"),
    ],
)
def test_job_errors(kwargs: dict[str, Any], fragment: str) -> None:
    """Every invalid job setting raises GraphError naming the job and the setting."""
    arguments: dict[str, Any] = {"outputs": "x/{a}", "run": noop, **kwargs}
    with pytest.raises(GraphError) as caught:
        Job.create("j", **arguments)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("job 'j': ")


@pytest.mark.parametrize("name", ["", "1job", "has space", "a/b", "x" * 129])
def test_invalid_job_names(name: str) -> None:
    """Job names are 1-128 identifier-like characters."""
    with pytest.raises(GraphError, match="invalid job name"):
        Job.create(name, outputs="x/{a}", run=noop)


def test_add_job_checks_a_hand_built_job() -> None:
    """A Job built without Job.create is checked by add_job all the same."""
    with pytest.raises(GraphError, match="job 'j': batch must be an int >= 1"):
        Graph().add_job(Job(name="j", outputs=(Pattern("x/{a}"),), run=noop, batch=0))
    with pytest.raises(GraphError, match="add_job\\(\\) takes a Job, got str"):
        Graph().add_job("j")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# The graph


def example_graph() -> Graph:
    graph = Graph("example")

    @graph.job(outputs="daily/{date}", deps=["raw/{date}"], batch=7)
    async def daily(ctx: object) -> None:
        """Build a day."""

    graph.add_job(command_job("raw", "raw/{date}"))
    graph.add_job(command_job("s3", "s3://bucket/events/date={date}"))
    graph.add_job(command_job("hourly", ["events/{date}/h{hour}", "events/{date}/all"]))
    return graph


def test_decorator_registers_and_returns_the_function() -> None:
    """@graph.job registers the function under its name and returns it unchanged."""
    graph = Graph()

    async def build(ctx: object) -> None:
        """Build."""

    assert graph.job(outputs="x/{a}")(build) is build
    assert graph.job("other", outputs="y/{a}")(build) is build
    assert list(graph.jobs()) == ["build", "other"]
    assert graph["build"].run is build


@pytest.mark.parametrize(
    ("ref", "job", "params"),
    [
        pytest.param("daily/2026-11-01", "daily", {"date": "2026-11-01"}, id="daily"),
        pytest.param("raw/2026-11-01", "raw", {"date": "2026-11-01"}, id="raw"),
        pytest.param("s3://bucket/events/date=2026-11-01", "s3", {"date": "2026-11-01"}, id="scheme"),
        pytest.param("events/2026-11-01/h07", "hourly", {"date": "2026-11-01", "hour": "07"}, id="first-output"),
        pytest.param("events/2026-11-01/all", "hourly", {"date": "2026-11-01"}, id="second-output"),
    ],
)
def test_job_for(ref: str, job: str, params: Mapping[str, str]) -> None:
    """job_for finds the one job producing a ref and the params its pattern matched."""
    found, found_params = example_graph().job_for(ref)
    assert (found.name, dict(found_params)) == (job, params)


def test_job_for_unknown_ref() -> None:
    """A ref no job produces raises NoJobForRef naming the ref and listing the jobs' patterns."""
    with pytest.raises(NoJobForRef) as caught:
        example_graph().job_for("weekly/2026-45")
    message = str(caught.value)
    assert "no job of graph 'example' produces 'weekly/2026-45'" in message
    assert "daily: daily/{date}; raw: raw/{date}" in message
    assert "hourly: events/{date}/h{hour}, events/{date}/all" in message
    assert isinstance(caught.value, WantbuildError)
    assert isinstance(caught.value, LookupError)
    assert caught.value.ref == "weekly/2026-45"


def test_job_for_in_an_empty_graph() -> None:
    """An empty graph says it has no jobs."""
    with pytest.raises(NoJobForRef, match="the graph has no jobs"):
        Graph().job_for("x")


def test_job_for_invalid_ref() -> None:
    """job_for validates the ref first."""
    with pytest.raises(InvalidRef, match="rule: dot-segment"):
        example_graph().job_for("daily/..")


def test_unknown_job_name() -> None:
    """graph[name] for an unknown name raises UnknownJob naming it, the closest and the known jobs."""
    with pytest.raises(UnknownJob) as caught:
        example_graph()["dayly"]
    assert str(caught.value) == (
        "graph 'example' has no job 'dayly'; did you mean 'daily'? (known jobs: 'daily', 'raw', 's3', 'hourly')"
    )
    assert isinstance(caught.value, KeyError)
    assert isinstance(caught.value, WantbuildError)


def test_jobs_is_read_only() -> None:
    """jobs() is a read-only view in definition order."""
    jobs = example_graph().jobs()
    assert list(jobs) == ["daily", "raw", "s3", "hourly"]
    with pytest.raises(TypeError):
        jobs["x"] = jobs["raw"]  # type: ignore[index]


def test_duplicate_job_name() -> None:
    """Adding a second job with a taken name raises GraphError naming it."""
    graph = example_graph()
    with pytest.raises(GraphError, match=r"job 'raw' is defined twice .*give one of them another name"):
        graph.add_job(command_job("raw", "other/{x}"))


def test_ambiguous_jobs_are_rejected_with_a_witness() -> None:
    """Two jobs whose patterns overlap are rejected, naming both, their patterns and a common ref."""
    graph = Graph()
    graph.add_job(command_job("a", "x/{d}"))
    with pytest.raises(GraphError) as caught:
        graph.add_job(command_job("b", "x/2026-{m}"))
    assert str(caught.value).startswith("jobs 'a' (x/{d}) and 'b' (x/2026-{m}) can both produce 'x/2026-0'; ")
    assert "make the patterns disjoint" in str(caught.value)
    assert list(graph.jobs()) == ["a"]
    assert graph.job_for("x/2026-01")[0].name == "a"


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(InvalidRef("a//b", "empty-segment", "segment 2 is empty"), id="InvalidRef"),
        pytest.param(NoJobForRef("x/1", "no job produces 'x/1'"), id="NoJobForRef"),
        pytest.param(UnknownJob("j", "graph 'g' has no job 'j'"), id="UnknownJob"),
        pytest.param(GraphError("job 'j': batch must be an int >= 1"), id="GraphError"),
    ],
)
def test_errors_pickle(error: Exception) -> None:
    """Errors survive pickling (for worker processes and threads that pass them on) with message intact."""
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.__dict__) == (type(error), str(error), error.__dict__)


def test_graph_errors_are_wantbuild_value_errors() -> None:
    """GraphError is catchable as WantbuildError and as ValueError."""
    with pytest.raises(GraphError) as caught:
        Graph("")
    assert isinstance(caught.value, WantbuildError)
    assert isinstance(caught.value, ValueError)


def test_bad_default_collision_policy() -> None:
    """A graph's default collision policy must be a known one."""
    with pytest.raises(GraphError, match="default_collision_policy must be one of shrink, defer, all_or_nothing"):
        Graph("g", default_collision_policy="never")  # type: ignore[arg-type]


def test_validate_accepts_a_valid_graph_and_catches_a_smuggled_overlap() -> None:
    """validate() passes on a valid graph and catches an overlap that bypassed add_job."""
    graph = example_graph()
    graph.validate()
    graph._jobs["copy"] = command_job("copy", "raw/{day}")
    with pytest.raises(GraphError, match=r"jobs 'raw' \(raw/\{date\}\) and 'copy' \(raw/\{day\}\) can both produce"):
        graph.validate()


# -- static deps


def test_static_deps_from_templates() -> None:
    """String deps are formatted with the output's params."""
    assert example_graph().static_deps("daily/2026-11-01") == ("raw/2026-11-01",)


def test_static_deps_none() -> None:
    """A job without deps has none."""
    assert example_graph().static_deps("raw/2026-11-01") == ()


def graph_with_deps(deps: Any) -> Graph:
    graph = Graph()
    graph.add_job(Job.create("j", outputs="x/{a}", run=noop, deps=deps))
    return graph


def test_static_deps_from_a_function() -> None:
    """A deps function gets the ref and params; its refs come back validated, deduplicated, in order."""

    def deps(ref: str, params: Mapping[str, str]) -> list[str]:
        return [f"y/{params['a']}", "z/1", f"y/{params['a']}"]

    assert graph_with_deps(deps).static_deps("x/7") == ("y/7", "z/1")


@pytest.mark.parametrize(
    ("deps", "fragment"),
    [
        pytest.param(lambda ref, params: ["bad//ref"], "a dependency of 'x/1' is invalid", id="invalid-ref"),
        pytest.param(lambda ref, params: "y/1", "returned 'y/1' for 'x/1'; return a list of refs", id="str"),
        pytest.param(lambda ref, params: 1 / 0, "its deps function raised ZeroDivisionError for 'x/1'", id="raises"),
        pytest.param(lambda ref, params: [ref], "'x/1' depends on itself", id="self"),
    ],
)
def test_static_deps_errors(deps: Any, fragment: str) -> None:
    """A deps function that fails or returns bad refs raises GraphError naming the job."""
    with pytest.raises(GraphError) as caught:
        graph_with_deps(deps).static_deps("x/1")
    assert str(caught.value).startswith("job 'j': ")
    assert fragment in str(caught.value)


def test_static_deps_template_giving_an_invalid_ref() -> None:
    """A template formatted into an invalid ref raises GraphError naming the job and the ref."""
    graph = Graph()
    graph.add_job(Job.create("j", outputs="x/a{a}", run=noop, deps=["y/{a}"]))
    with pytest.raises(GraphError) as caught:
        graph.static_deps("x/a..")
    assert str(caught.value).startswith("job 'j': computing the deps of 'x/a..' failed: invalid partition ref 'y/..'")


# -- fingerprint

GRAPH_SOURCE = """
from supervisor._graph import Graph, Job

async def build(ctx):
    pass

graph = Graph("fp")
graph.add_job(Job.create("raw", outputs="raw/{date}", command=["python3", "raw.py"], timeout=60))
graph.add_job(Job.create("daily", outputs=["daily/{date}"], run=build, deps=["raw/{date}"], batch=7, retries=2))
"""


def build_graph_from_source() -> Graph:
    namespace: dict[str, Any] = {}
    exec(GRAPH_SOURCE, namespace)
    graph = namespace["graph"]
    assert isinstance(graph, Graph)
    return graph


def test_fingerprint_is_stable_across_processes() -> None:
    """Another interpreter with another hash seed computes the same fingerprint for the same graph."""
    root = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "12345"}
    code = GRAPH_SOURCE + "\nprint(graph.fingerprint())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    fingerprint = build_graph_from_source().fingerprint()
    assert result.stdout.splitlines()[-1] == fingerprint
    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0


def test_fingerprint_ignores_where_jobs_run() -> None:
    """A job's executor and resources are deployment, not the graph: moving a job to a cluster keeps the log's
    fingerprint (docs/decisions.md, executors)."""
    from supervisor._executors import DaskExecutor

    base, moved = Graph("a"), Graph("a")
    base.add_job(Job.create("raw", outputs="raw/{d}", command=["python3", "raw.py"]))
    moved.add_job(Job.create("raw", outputs="raw/{d}", command=["python3", "raw.py"],
                             executor=DaskExecutor(address="tcp://127.0.0.1:8786"), resources={"gpu": 1}))
    assert moved.fingerprint() == base.fingerprint()


def test_fingerprint_ignores_callable_identity_and_order() -> None:
    """Another async function or another definition order gives the same fingerprint."""

    async def other(ctx: object) -> None:
        """Another body."""

    first, second = Graph("a"), Graph("b")
    first.add_job(Job.create("x", outputs=["x/{a}", "y/{a}"], run=noop))
    first.add_job(command_job("z", "z/{a}"))
    second.add_job(command_job("z", "z/{a}"))
    second.add_job(Job.create("x", outputs=["y/{a}", "x/{a}"], run=other))
    assert first.fingerprint() == second.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"batch": 2}, id="batch"),
        pytest.param({"concurrency": 3}, id="concurrency"),
        pytest.param({"retries": 1}, id="retries"),
        pytest.param({"backoff": 2.5}, id="backoff"),
        pytest.param({"timeout": 5}, id="timeout"),
        pytest.param({"heartbeat_timeout": 5}, id="heartbeat"),
        pytest.param({"outputs": "x/{b}"}, id="pattern"),
        pytest.param({"deps": ["y/{a}"]}, id="deps"),
        pytest.param({"command": ["false"]}, id="argv"),
        pytest.param({"name": "renamed"}, id="name"),
    ],
)
def test_fingerprint_changes_with_the_definition(change: dict[str, Any]) -> None:
    """Changing any fingerprinted setting changes the fingerprint."""
    base: dict[str, Any] = {"name": "j", "outputs": "x/{a}", "command": ["true"]}
    before, after = Graph(), Graph()
    before.add_job(Job.create(**base))
    after.add_job(Job.create(**{**base, **change}))
    assert before.fingerprint() != after.fingerprint()


def test_fingerprint_uses_the_declared_command() -> None:
    """With declared_command set, the resolved argv does not affect the fingerprint."""
    first, second = Graph(), Graph()
    first.add_job(
        Job.create("j", outputs="x/{a}", command=["/a/python", "/a/x.py"], declared_command=["python3", "x.py"])
    )
    second.add_job(
        Job.create("j", outputs="x/{a}", command=["/b/python", "/b/x.py"], declared_command=["python3", "x.py"])
    )
    assert first.fingerprint() == second.fingerprint()


# ---------------------------------------------------------------------------------------------------------
# The graph file


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a job script; sys.path and imported job modules are restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "daily.py").write_text("print('built')\n")
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("graphjobs_"):
            del sys.modules[name]


def write(folder: Path, text: str, name: str = "graph.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def job_module(folder: Path, body: str) -> str:
    """Write a uniquely named module next to the graph file; return its name."""
    name = f"graphjobs_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return name


EXAMPLE = """
    [graph]
    name = "example"
    default_collision_policy = "defer"

    [job.daily]
    outputs = ["daily/{date}"]
    command = ["python3", "jobs/daily.py", "--verbose"]
    deps = ["raw/{date}"]
    batch = 7
    concurrency = 2
    retries = 2
    backoff = 1.5
    backoff_factor = 3
    max_backoff = 100
    timeout = 600
    heartbeat_timeout = 60.5
    collision_policy = "all_or_nothing"
"""


def test_load_graph_reads_every_field(folder: Path) -> None:
    """Every documented field reaches the Job; python3 becomes sys.executable, the script an absolute path."""
    module = job_module(folder, "async def build_raw(ctx):\n    pass\n")
    path = write(folder, EXAMPLE + f'\n[job.raw]\noutputs = "raw/{{date}}"\nfunction = "{module}:build_raw"\n')
    graph = load_graph(str(path))
    assert (graph.name, graph.default_collision_policy, list(graph.jobs())) == ("example", "defer", ["daily", "raw"])
    daily = graph["daily"]
    assert daily.command == (sys.executable, str(folder.resolve() / "jobs" / "daily.py"), "--verbose")
    assert daily.declared_command == ("python3", "jobs/daily.py", "--verbose")
    assert daily.deps == TemplateDeps((Pattern("raw/{date}"),))
    assert (daily.batch, daily.concurrency, daily.timeout, daily.heartbeat_timeout) == (7, 2, 600, 60.5)
    assert daily.retry == Retry(max_attempts=3, backoff=1.5, factor=3, max_backoff=100)
    assert daily.collision_policy == "all_or_nothing"
    assert graph["raw"].run is sys.modules[module].build_raw
    assert graph.static_deps("daily/2026-11-01") == ("raw/2026-11-01",)


def test_graph_name_defaults_to_the_file_stem(folder: Path) -> None:
    """Without [graph], the graph is named after the file."""
    graph = load_graph(write(folder, '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\n', name="nightly.toml"))
    assert (graph.name, graph.default_collision_policy) == ("nightly", None)
    assert graph["a"].command == ("true",)


def test_fingerprint_does_not_depend_on_the_folder(folder: Path) -> None:
    """The same graph file in two folders has the same fingerprint."""
    other = folder / "copy"
    (other / "jobs").mkdir(parents=True)
    (other / "jobs" / "daily.py").write_text("")
    first, second = load_graph(write(folder, EXAMPLE)), load_graph(write(other, EXAMPLE))
    assert first["daily"].command != second["daily"].command
    assert first.fingerprint() == second.fingerprint()


def test_relative_program_is_resolved_against_the_folder(folder: Path) -> None:
    """A program path is relative to the graph file's folder and made absolute."""
    script = folder / "jobs" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    graph = load_graph(write(folder, '[job.a]\noutputs = "a/{x}"\ncommand = ["jobs/run.sh", "data"]\n'))
    assert graph["a"].command == (str(script.resolve()), "data")


def load_error(folder: Path, text: str) -> str:
    path = write(folder, text)
    with pytest.raises(GraphError) as caught:
        load_graph(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param("[job.a\n", ["not valid TOML", "(at line 1, column 7)"], id="invalid-toml"),
        pytest.param(
            '[jobs.a]\noutputs = "a/{x}"\n',
            ["unknown top-level key 'jobs'; did you mean 'job'? valid: graph, executor, job"],
            id="unknown-table",
        ),
        pytest.param(
            '[graph]\nnmae = "x"\n[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\n',
            ["[graph]: unknown field 'nmae'; did you mean 'name'?"],
            id="unknown-graph-field",
        ),
        pytest.param(
            '[graph]\ndefault_collision_policy = "x"\n[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\n',
            ["field 'default_collision_policy' must be one of shrink, defer, all_or_nothing"],
            id="bad-default-policy",
        ),
        pytest.param('graph = 3\n[job.a]\noutputs = "a"\n', ["'graph' must be a table"], id="graph-not-table"),
        pytest.param("job = 3\n", ["'job' must be a table of jobs"], id="job-not-table"),
        pytest.param("[graph]\n", ["the graph defines no jobs; add a [job.NAME] table"], id="no-jobs"),
        pytest.param("[job]\na = 1\n", ["job 'a' must be a table ([job.a]"], id="job-value-not-table"),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\nretrys = 2\n',
            [
                "job 'a': unknown field 'retrys'; did you mean 'retries'?",
                "valid: outputs, command, function, deps, batch",
            ],
            id="unknown-job-field",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\nbatch = "7"\n',
            ["job 'a': field 'batch' must be an integer, got a string ('7')"],
            id="batch-string",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\nbatch = true\n',
            ["job 'a': field 'batch' must be an integer, got a boolean"],
            id="batch-bool",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\ntimeout = "10s"\n',
            ["job 'a': field 'timeout' must be a number (seconds), got a string"],
            id="timeout-string",
        ),
        pytest.param(
            '[job.a]\noutputs = 5\ncommand = ["true"]\n',
            ["job 'a': field 'outputs' must be a string or an array of strings, got an integer"],
            id="outputs-int",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = "true"\n',
            ["job 'a': field 'command' must be a non-empty array of non-empty strings (an argv), got a string"],
            id="command-string",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\ncollision_policy = "first"\n',
            ["job 'a': field 'collision_policy' must be one of 'shrink', 'defer', 'all_or_nothing'"],
            id="bad-policy",
        ),
        pytest.param('[job.a]\ncommand = ["true"]\n', ["job 'a': missing field 'outputs'"], id="missing-outputs"),
        pytest.param('[job.a]\noutputs = "a/{x}"\n', ["job 'a': has neither 'command' nor 'function'"], id="neither"),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\nfunction = "m:f"\n',
            ["job 'a': has both 'command' and 'function'; give exactly one"],
            id="both",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["no-such-program-wantbuild"]\n',
            ["job 'a': field 'command': the program 'no-such-program-wantbuild' is not on PATH"],
            id="program-not-on-path",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["bin/missing.sh"]\n',
            ["job 'a': field 'command': the program 'bin/missing.sh' does not exist", "relative to the graph"],
            id="program-path-missing",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["jobs/daily.py"]\n',
            ["the program 'jobs/daily.py' is not executable; run chmod +x"],
            id="program-not-executable",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["python3", "jobs/missing.py"]\n',
            ["job 'a': field 'command': the script 'jobs/missing.py' does not exist"],
            id="script-missing",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\nfunction = "no_colon"\n',
            ["job 'a': field 'function': 'no_colon' is not 'module:function'"],
            id="function-spec",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\nfunction = "graphjobs_absent_module:f"\n',
            ["job 'a': field 'function': cannot import module 'graphjobs_absent_module'"],
            id="function-module-missing",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\nbatch = 0\n',
            ["job 'a': batch must be an int >= 1"],
            id="batch-zero",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x"\ncommand = ["true"]\n',
            ["job 'a': pattern 'a/{x': unbalanced '{'"],
            id="bad-pattern",
        ),
        pytest.param(
            '[job.a]\noutputs = "a/{x}"\ndeps = ["b/{y}"]\ncommand = ["true"]\n',
            ["job 'a': the dependency template 'b/{y}' uses {y}"],
            id="bad-template",
        ),
        pytest.param(
            '[job.a]\noutputs = "x/{d}"\ncommand = ["true"]\n[job.b]\noutputs = "x/2026-{m}"\ncommand = ["true"]\n',
            ["jobs 'a' (x/{d}) and 'b' (x/2026-{m}) can both produce 'x/2026-0'"],
            id="ambiguous",
        ),
    ],
)
def test_graph_file_errors(folder: Path, text: str, fragments: list[str]) -> None:
    """Each mistake in a graph file raises GraphError starting with the path and naming the problem."""
    message = load_error(folder, text)
    for fragment in fragments:
        assert fragment in message


def test_missing_graph_file(tmp_path: Path) -> None:
    """A missing file is reported with its path."""
    path = tmp_path / "absent.toml"
    with pytest.raises(GraphError, match="no such graph file"):
        load_graph(path)
    with pytest.raises(GraphError, match=f"^{path}: "):
        load_graph(path)


def test_graph_file_is_a_folder(tmp_path: Path) -> None:
    """A folder given as the graph file is reported."""
    with pytest.raises(GraphError, match="is a folder, not a graph file"):
        load_graph(tmp_path)


def test_graph_file_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported as invalid TOML."""
    path = tmp_path / "graph.toml"
    path.write_bytes(b'[job.a]\noutputs = "\xff"\n')
    with pytest.raises(GraphError, match="not valid TOML"):
        load_graph(path)


@pytest.mark.parametrize(
    ("body", "attribute", "fragment"),
    [
        pytest.param(
            "def build(ctx):\n    pass\n", "build", "is not an async function; define it with async def", id="sync"
        ),
        pytest.param("x = 1\n", "build", "has no attribute 'build'", id="missing-attribute"),
        pytest.param("raise RuntimeError('boom')\n", "build", "raised RuntimeError: boom", id="import-raises"),
    ],
)
def test_graph_file_function_errors(folder: Path, body: str, attribute: str, fragment: str) -> None:
    """A function that cannot be imported or is not async is reported with the job and field."""
    module = job_module(folder, body)
    message = load_error(folder, f'[job.a]\noutputs = "a/{{x}}"\nfunction = "{module}:{attribute}"\n')
    assert "job 'a': field 'function': " in message
    assert fragment in message


def test_graph_file_function_with_dotted_attribute(folder: Path) -> None:
    """module:Class.method style attribute paths are followed."""
    module = job_module(folder, "class Jobs:\n    @staticmethod\n    async def build(ctx):\n        pass\n")
    graph = load_graph(write(folder, f'[job.a]\noutputs = "a/{{x}}"\nfunction = "{module}:Jobs.build"\n'))
    assert graph["a"].run is sys.modules[module].Jobs.build


# ---------------------------------------------------------------------------------------------------------
# docs/graph-file.md runs

DOC = Path(__file__).parent.parent / "docs" / "graph-file.md"


def doc_blocks(language: str) -> list[str]:
    text = DOC.read_text()
    return [block.split("```", 1)[0] for block in text.split(f"```{language}\n")[1:]]


def test_documented_graph_file_loads(folder: Path) -> None:
    """The graph file shown in docs/graph-file.md loads, with the job files it names."""
    (folder / "pipeline.py").write_text("async def ingest(ctx):\n    pass\n")
    graph = load_graph(write(folder, doc_blocks("toml")[0]))
    assert (graph.name, list(graph.jobs())) == ("example", ["raw", "daily"])
    assert graph["daily"].retry == Retry(max_attempts=3, backoff=1.5, factor=2.0, max_backoff=300)
    assert graph.static_deps("daily/2026-11-01") == ("raw/2026-11-01",)


def test_documented_python_api_runs(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API example in docs/graph-file.md runs and gives the results its comments show."""
    code = doc_blocks("python")[-1].replace("from supervisor import", "from supervisor._graph import")
    (folder / "jobs" / "raw.py").write_text("")
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    graph = namespace["graph"]
    assert graph.job_for("daily/2026-11-01") == (graph["daily"], {"date": "2026-11-01"})
    assert graph.static_deps("daily/2026-11-01") == ("raw/2026-11-01",)
    assert graph["daily"].retry == Retry(max_attempts=3, backoff=1.5)
