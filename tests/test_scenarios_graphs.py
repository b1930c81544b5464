"""Scenarios of several graphs: the format, the two cross-graph war-games (their determinism is tested with the
catalog's in test_scenarios.py), the cross-graph checks (X1, X2), and the upstream link's wake on the runtime's
clock."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scenarios
from scenarios import (
    ScenarioError,
    ScenarioResult,
    VirtualClock,
    dump_scenario,
    load_scenario,
    parse_scenario,
    run_scenario,
)
from scenarios._multi import cross_graph_checks
from scenarios._result import RunSpan, WantRow


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Warnings and errors only (the simulated failures would log tracebacks)."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.configure(**saved)


def _war_game(name: str) -> ScenarioResult:
    return run_scenario(load_scenario(scenarios.find_scenario(name)))


def _built_by(r: ScenarioResult) -> dict[str, list[str]]:
    """Each partition: the runs that built it (started and did not stop at a missing dependency), ids prefixed with
    their graph."""
    out: dict[str, list[str]] = {}
    for run in r.runs:
        for ref in run.partitions if run.status != "DepMiss" else ():
            out.setdefault(ref, []).append(run.job_run_id)
    return out


def _ended(r: ScenarioResult, job: str) -> float:
    """When the last Succeeded run of ``job`` (``GRAPH:JOB``) ended."""
    return max(x.ended_at or 0.0 for x in r.runs if x.job == job and x.status == "Succeeded")


# -------------------------------------------------------------------------------------------------------- war-games


def test_a_cross_graph_chain_resolves_with_each_partition_built_once() -> None:
    """cross-graph-dependency-chain: reports waits through events, which waits through raw; bottom up, each
    partition of every graph built by exactly one run; the direct want in events joins the build reports caused."""
    r = _war_game("cross-graph-dependency-chain")
    assert r.ok, (r.stopped, [str(c) for c in r.failed_checks])
    assert r.violations == []
    built = _built_by(r)
    for ref, status in r.partitions.items():
        if status == "Live":
            assert len(built[ref]) == 1, (ref, built[ref])
    assert _ended(r, "raw:ingest") <= _ended(r, "events:daily") <= _ended(r, "reports:report")
    # The chain went through each graph's log: a want made by the graph below, in the graph above.
    sources = {w.want_id.split(":")[0]: w.source for w in r.wants if w.source.startswith("graph:")}
    assert sources == {"raw": "graph:events", "events": "graph:reports"}
    assert [x.job for x in r.runs if x.job.endswith(".events") or x.job.endswith(".raw")] == [
        "events:upstream.raw", "reports:upstream.events"]
    direct = next(w for w in r.wants if w.name == "events-direct")
    assert direct.status == "Successful"
    assert sum(1 for x in r.runs if x.job == "events:daily" and x.status == "Succeeded") == 1


def test_two_graphs_colliding_on_a_shared_upstream_build_it_once() -> None:
    """two-graphs-colliding-on-a-shared-upstream: events builds each wanted daily once although reports and billing
    want overlapping days at the same instant; both succeed; day 9 fails in events and both downstream wants end
    UpstreamFailed with a reason naming graph events and the failure."""
    r = _war_game("two-graphs-colliding-on-a-shared-upstream")
    assert r.ok, (r.stopped, [str(c) for c in r.failed_checks])
    built = _built_by(r)
    for day in ("01", "02", "03", "04"):
        assert len(built[f"events:daily/2026-11-{day}"]) == 1
    upstream_wants = [w for w in r.wants if w.want_id.startswith("events:")]
    assert {w.source for w in upstream_wants} == {"graph:reports", "graph:billing"}
    first = [w for w in upstream_wants if w.created_at == 0]
    assert len(first) == 2
    assert set(first[0].refs) & set(first[1].refs) == {"events:daily/2026-11-02", "events:daily/2026-11-03"}
    for name in ("reports-day-9", "billing-day-9"):
        w = next(x for x in r.wants if x.name == name)
        assert w.status == "UpstreamFailed"
        assert "graph 'events'" in w.reason, w.reason
        assert "simulated failure of daily" in w.reason, w.reason
        assert "--db events/scenario.db" in w.reason  # where to look, the same in every run


@pytest.mark.parametrize("policy", ["shrink", "defer", "all_or_nothing"])
def test_the_shared_upstream_holds_under_every_collision_policy(policy: str) -> None:
    """Whatever collision policy events applies, both downstream graphs succeed and nothing is built twice."""
    sc = load_scenario(scenarios.find_scenario("two-graphs-colliding-on-a-shared-upstream"))
    r = run_scenario(sc.with_policy(policy))  # type: ignore[arg-type]
    assert r.violations == []
    assert r.metrics.duplicate_work == 0
    assert {w.name: w.status for w in r.wants if w.name} == {
        "reports": "Successful", "billing": "Successful",
        "reports-day-9": "UpstreamFailed", "billing-day-9": "UpstreamFailed"}


SHARED = """\
[scenario]
name = "shared"
seed = 3

[graphs.events.job.daily]
outputs = "daily/{{day}}"
params = {{ day = "int" }}
duration = 100

{readers}
[[timeline]]
at = {reports_at}
action = "want"
graph = "reports"
name = "r"
refs = [{reports}]

[[timeline]]
at = {billing_at}
action = "want"
graph = "billing"
name = "b"
refs = [{billing}]
{extra}
"""


READER = """\
[graphs.{graph}]
upstream = ["events"]

[graphs.{graph}.job.{job}]
outputs = "{job}/{{day}}"
params = {{ day = "int" }}
behaviour = "missing_deps"
missing = ["events:daily/{{day}}"]
duration = 10
"""


def _shared(reports: str = '"report/1"', billing: str = '"bill/1"', reports_at: float = 0, billing_at: float = 0,
            extra: str = "") -> str:
    """Graphs reports and billing, both reading graph events; their wants at the given times."""
    readers = "\n".join(READER.format(graph=g, job=j) for g, j in (("reports", "report"), ("billing", "bill")))
    return SHARED.format(reports=reports, billing=billing, reports_at=reports_at, billing_at=billing_at, extra=extra,
                         readers=readers)


def test_a_killed_upstream_build_fails_both_downstream_wants_with_a_reason() -> None:
    """The build both graphs wait for is killed in events: both downstream wants end UpstreamFailed, each reason
    naming graph events and the kill; nothing is left waiting."""
    r = run_scenario(parse_scenario(_shared(extra='[[timeline]]\nat = 50\naction = "kill"\ngraph = "events"\n'
                                                  'ref = "daily/1"\nreason = "operator killed it"\n'), "kill.toml"))
    assert r.violations == []
    assert r.stopped == ""
    for name in ("r", "b"):
        w = next(x for x in r.wants if x.name == name)
        assert w.status == "UpstreamFailed"
        assert "graph 'events'" in w.reason, w.reason
        assert "operator killed it" in w.reason, w.reason
    assert all(w.ended_at is not None for w in r.wants)


def test_canceling_one_downstream_want_cancels_its_upstream_want_only() -> None:
    """reports cancels its want mid-build: its upstream run is canceled, which cancels its want in events with a
    reason naming the run; the build goes on for billing, which succeeds; nothing is built twice."""
    r = run_scenario(parse_scenario(_shared(extra='[[timeline]]\nat = 50\naction = "cancel"\ngraph = "reports"\n'
                                                  'want = "r"\n'), "cancel.toml"))
    assert r.violations == []
    by_name = {w.name: w for w in r.wants if w.name}
    assert by_name["r"].status == "Canceled"
    assert by_name["b"].status == "Successful"
    upstream = {w.source: w for w in r.wants if w.want_id.startswith("events:")}
    assert upstream["graph:reports"].status == "Canceled"
    assert "in graph 'reports' was canceled" in upstream["graph:reports"].reason
    assert upstream["graph:billing"].status == "Successful"
    assert r.metrics.duplicate_work == 0
    assert len(_built_by(r)["events:daily/1"]) == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    reports=st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True),
    billing=st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True),
    reports_at=st.sampled_from([0, 0, 5, 50, 99, 100, 150]),
    billing_at=st.sampled_from([0, 0, 5, 50, 99, 100, 150]),
)
def test_any_arrival_of_two_graphs_wants_keeps_the_shared_upstream_built_once(
        reports: list[int], billing: list[int], reports_at: int, billing_at: int) -> None:
    """Whatever days reports and billing want of events, and whenever (together, one mid-build, one after): both
    succeed, each daily is built by one run, I1-I7 hold in every graph and X1-X2 across them."""
    text = _shared(", ".join(f'"report/{d}"' for d in reports), ", ".join(f'"bill/{d}"' for d in billing),
                   reports_at, billing_at)
    r = run_scenario(parse_scenario(text, "property.toml"))
    assert [str(v) for v in r.violations] == []
    assert r.ok
    assert {w.name: w.status for w in r.wants if w.name} == {"r": "Successful", "b": "Successful"}
    built = _built_by(r)
    for d in set(reports) | set(billing):
        assert len(built[f"events:daily/{d}"]) == 1


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    reports_at=st.sampled_from([0, 20, 60]),
    billing_at=st.sampled_from([0, 40, 90]),
    kill_at=st.sampled_from([1, 30, 70, 99, 120]),
)
def test_a_killed_shared_upstream_never_leaves_a_downstream_want_silent(reports_at: int, billing_at: int,
                                                                         kill_at: int) -> None:
    """Whenever the shared build is killed relative to the two graphs' wants: every want ends, X1-X2 hold, and a
    downstream want that did not succeed names graph events in its reason."""
    kill = f'[[timeline]]\nat = {kill_at}\naction = "kill"\ngraph = "events"\nref = "daily/1"\n'
    r = run_scenario(parse_scenario(_shared(reports_at=reports_at, billing_at=billing_at, extra=kill), "kill.toml"))
    assert [str(v) for v in r.violations] == []
    assert r.stopped == ""
    for w in r.wants:
        assert w.ended_at is not None, w
        if w.name is not None and w.status != "Successful":
            assert "graph 'events'" in w.reason, w.reason


# -------------------------------------------------------------------------------------------------------- X1, X2


def _want(want_id: str, status: str, reason: str = "", source: str = "scenario") -> WantRow:
    return WantRow(want_id, None, (), source, status, 0.0, None if status in ("Idle", "Building") else 1.0, reason)


def _run(run_id: str, job: str, status: str, planned: tuple[str, ...]) -> RunSpan:
    return RunSpan(run_id, job, status, 1, planned, planned, (), 0, 0.0, 0.0, 1.0)


def test_the_cross_graph_checks_flag_silent_ends_and_double_builds() -> None:
    """X1 flags an upstream partition another graph asked for that was built again; X2 a downstream want left
    unended, ended without a reason, or failed after an upstream want failed without naming that graph."""
    sc = parse_scenario(_shared(), "x.toml")
    dup = SimpleNamespace(ref="daily/1", job_run_id="r-00000002", why="being built by r-00000001", at=5.0)
    runners: dict[str, Any] = {"events": SimpleNamespace(sim=SimpleNamespace(duplicates=[dup])),
                               "reports": SimpleNamespace(sim=SimpleNamespace(duplicates=[]))}
    runs = [_run("reports:r-00000001", "reports:upstream.events", "Failed", ("reports:events:daily/1",))]
    wants = [
        _want("reports:w-00000001", "Building"),
        _want("reports:w-00000002", "Failed"),
        _want("reports:w-00000003", "UpstreamFailed", "report/1: upstream daily/1 Failed"),
        _want("reports:w-00000004", "UpstreamFailed", "report/1: graph 'events': want w-1 ended Failed"),
        _want("events:w-00000001", "Canceled", "", source="graph:reports"),
        _want("events:w-00000002", "Successful", source="graph:billing"),
    ]
    found = [(v.invariant, v.entities[0]) for v in cross_graph_checks(sc, runners, runs, wants)]
    assert found == [("X1", "events:daily/1"), ("X2", "reports:w-00000001"), ("X2", "reports:w-00000002"),
                     ("X2", "reports:w-00000003"), ("X2", "events:w-00000001")]


# -------------------------------------------------------------------------------------------------------- the format

GOOD = """\
[scenario]
name = "g"

[graphs.events.job.daily]
outputs = "daily/{d}"

[graphs.reports]
upstream = ["events"]

[graphs.reports.job.report]
outputs = "report/{d}"
missing = ["events:daily/{d}"]
behaviour = "missing_deps"

[[timeline]]
at = 0
action = "want"
graph = "reports"
name = "a"
refs = ["report/1"]
"""


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        pytest.param(GOOD.replace('upstream = ["events"]', 'upstream = ["event"]'), 8,
                     "graphs.reports.upstream: no graph named 'event' in this scenario; did you mean 'events'?",
                     id="unknown-upstream-graph"),
        pytest.param(GOOD.replace('[graphs.events.job.daily]', '[graphs.events]\nupstream = ["reports"]\n'
                                  '[graphs.events.job.daily]'), 5,
                     "graphs.events.upstream: the graphs depend on each other in a cycle: events -> reports -> "
                     "events", id="cycle-between-graphs"),
        pytest.param(GOOD.replace('upstream = ["events"]', 'upstream = ["reports"]'), 8,
                     "graph 'reports' names itself as upstream", id="itself-upstream"),
        pytest.param(GOOD.replace('graph = "reports"\n', ""), 15,
                     'timeline[0]: in a scenario of several graphs every step names its graph; add graph = "NAME"',
                     id="step-without-graph"),
        pytest.param(GOOD.replace('graph = "reports"', 'graph = "report"'), 18,
                     "timeline[0].graph: no graph named 'report'; did you mean 'reports'?", id="step-unknown-graph"),
        pytest.param(GOOD + '[[timeline]]\nat = 5\naction = "crash"\ngraph = "events"\n', 23,
                     "timeline[1].action: a crash step is not supported in a scenario of several graphs yet",
                     id="crash-refused"),
        pytest.param(GOOD + '[[timeline]]\nat = 5\naction = "stall"\ndowntime = 30\ngraph = "events"\n', 23,
                     "timeline[1].action: a stall step is not supported", id="stall-refused"),
        pytest.param(GOOD + '[job.x]\noutputs = "x/{d}"\n', 21,
                     "job: this scenario has [graphs.NAME] tables: its jobs go under [graphs.NAME.job.JOB]",
                     id="top-level-job"),
        pytest.param(GOOD.replace("[graphs.reports]", "[graphs.Reports]").replace("[graphs.reports.job",
                                                                               "[graphs.Reports.job")
                     .replace('graph = "reports"', 'graph = "Reports"'), 7,
                     "graphs.Reports: invalid graph name 'Reports'", id="bad-graph-name"),
        pytest.param(GOOD + '[expect.partitions]\n"daily/1" = "Live"\n', 22,
                     'expect.partitions."daily/1": in a scenario of several graphs a partition is GRAPH:REF',
                     id="partition-without-graph"),
        pytest.param(GOOD + '[expect.partitions]\n"events:report/1" = "Live"\n', 22,
                     'expect.partitions."events:report/1": no job of graph \'events\' produces \'report/1\'',
                     id="partition-of-the-wrong-graph"),
        pytest.param(GOOD + '[[timeline]]\nat = 5\naction = "kill"\ngraph = "events"\njob = "report"\n', 25,
                     "timeline[1].job: graph 'events' has no job named 'report'", id="kill-job-of-another-graph"),
        pytest.param(GOOD + '[[timeline]]\nat = 5\naction = "cancel"\ngraph = "events"\nwant = "a"\n', 24,
                     "timeline[1].graph: the want 'a' is in graph 'reports', not 'events'", id="cancel-across-graphs"),
        pytest.param(GOOD.replace('upstream = ["events"]\n', ""), 11,
                     "graphs.reports.job.report.missing: the template 'events:daily/{d}' does not name a ref any "
                     "job builds",
                     id="ref-of-a-graph-not-read"),
        pytest.param(GOOD.replace("[graphs.events.job.daily]\noutputs", "[graphs.events.jobs.daily]\noutputs"), 4,
                     "graphs.events.jobs: unknown field in [graphs.events]", id="unknown-graph-field"),
    ],
)
def test_format_errors_of_several_graphs_name_the_line_key_and_fix(text: str, line: int, needle: str) -> None:
    """A bad scenario of several graphs raises ScenarioError at FILE:LINE naming the key and what to do."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    msg = str(info.value)
    assert msg.startswith(f"bad.toml:{line}: "), msg
    assert needle in msg, msg


def test_a_one_graph_step_may_not_name_a_graph() -> None:
    """`graph` on a step of a one-graph scenario is refused: there is no other graph."""
    text = ('[scenario]\n[job.d]\noutputs = "d/{x}"\n[[timeline]]\nat = 0\naction = "want"\nrefs = ["d/1"]\n'
            'graph = "a"\n')
    with pytest.raises(ScenarioError, match=r"x.toml:8: timeline\[0\].graph: only a scenario of several graphs"):
        parse_scenario(text, "x.toml")


def test_several_graphs_round_trip_through_the_dumper() -> None:
    """dump_scenario writes [graphs.NAME] tables and step graphs that parse back into an equal Scenario."""
    sc = parse_scenario(_shared(extra='[[timeline]]\nat = 5\naction = "cancel"\ngraph = "reports"\nwant = "r"\n'),
                        "s.toml")
    text = dump_scenario(sc)
    assert "[graphs.reports.job.report]" in text
    assert 'graph = "billing"' in text
    again = parse_scenario(text, "again.toml")
    assert dataclasses.replace(again, path=None) == dataclasses.replace(sc, path=None)


def test_explore_refuses_several_graphs() -> None:
    """explore runs one graph: a scenario of several gets a clear error saying what to do instead."""
    with pytest.raises(ScenarioError, match="explore runs one graph"):
        scenarios.explore(parse_scenario(_shared(), "s.toml"), runs=1)


# -------------------------------------------------------------------------------------------------------- the link


async def test_the_log_links_wake_goes_through_the_runs_clock() -> None:
    """Following the upstream log with no commit gives up after 5 s of the run's clock (a virtual one here), not
    of the wall clock."""
    from supervisor._upstream import _next_commit

    clock = VirtualClock()

    async def silent() -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None  # pragma: no cover - never reached

    ctx = SimpleNamespace(sleep=clock.sleep)
    task = asyncio.ensure_future(_next_commit(ctx, silent()))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()
    assert clock.next_deadline() == 5.0
    clock.advance(4.9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(5.0)
    assert await asyncio.wait_for(task, 1.0) is None
