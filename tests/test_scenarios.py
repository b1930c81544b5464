"""The scenario runner: the catalog, determinism, validation, crashes and I3, reports, explore and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from click.testing import CliRunner
from conftest import need

import scenarios
from actors import InvariantChecker, Violation
from scenarios import (
    ScenarioError,
    VirtualClock,
    catalog,
    dump_scenario,
    load_scenario,
    parse_scenario,
    render_html,
    render_json,
    render_text,
    run_scenario,
    scenario,
)
from scenarios import _runner as runner_module

CATALOG = catalog()
KNOWN_CORE_BUGS: dict[str, str] = {}
"""Catalog scenarios that fail because of a known core bug (strict xfail: remove the entry once it is fixed)."""


def _params() -> list[Any]:
    out = []
    for e in CATALOG:
        marks = [pytest.mark.xfail(reason=KNOWN_CORE_BUGS[e.name], strict=True)] if e.name in KNOWN_CORE_BUGS else []
        out.append(pytest.param(e.path, id=e.name, marks=marks))
    return out


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Warnings and errors only, with plain tracebacks: rendering every debug line (and rich tracebacks of the
    simulated failures) would cost seconds per scenario. The scenario code itself logs as usual."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),  # stdout is for the CLI's results
        cache_logger_on_first_use=False,
    )
    yield
    structlog.configure(**saved)


def _digest(keys: list[tuple[str, str, str, int, float]]) -> str:
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()


# -------------------------------------------------------------------------------------------------------- catalog


def test_catalog_has_the_required_war_games() -> None:
    """At least ten bundled scenarios, covering every war-game the issue names, each with expectations."""
    names = {e.name for e in CATALOG}
    required = {
        "identical-wants-racing", "partially-overlapping-batches", "want-arrives-while-building",
        "downstreams-missing-same-upstream", "cancel-while-shared-run-builds", "taint-during-downstream-build",
        "crash-between-lease-and-start", "crash-during-group-commit", "retry-storm-flaky", "dependency-cycle",
        "failover-mid-backfill", "stalled-leader-resumes", "cross-graph-dependency-chain",
        "two-graphs-colliding-on-a-shared-upstream",
    }
    assert required <= names
    for e in CATALOG:
        sc = load_scenario(e.path)
        ex = sc.expect
        assert ex.metrics or ex.runs or ex.events or ex.wants or ex.partitions, e.name
        assert sc.description, e.name


@pytest.mark.parametrize("path", _params())
def test_catalog_scenario_meets_its_expectations(path: Path) -> None:
    """Every bundled scenario runs on the real runtime and meets every expectation; invariants hold."""
    r = run_scenario(load_scenario(path))
    assert r.violations == []
    assert [f"{c.name}: expected {c.expected}, got {c.actual}" for c in r.failed_checks] == []
    assert r.stopped == ""
    assert r.ok


def test_a_day_of_job_time_runs_in_seconds() -> None:
    """A scenario simulating more than a day of job time takes a few seconds of wall time at most."""
    r = run_scenario(load_scenario(scenarios.find_scenario("a-day-of-hourlies")))
    job_time = sum((x.worked_until or 0) - (x.started_at or 0) for x in r.runs if x.started_at is not None)
    assert job_time >= 86400
    assert r.wall_seconds < 5


# -------------------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "name", ["crash-during-group-commit", "retry-storm-flaky", "downstreams-missing-same-upstream",
             "cross-graph-dependency-chain", "two-graphs-colliding-on-a-shared-upstream"]
)
def test_same_scenario_and_seed_give_the_same_log_and_report(name: str) -> None:
    """Two runs give identical (type, kind, id, entity_seq, at) sequences and identical reports."""
    sc = load_scenario(scenarios.find_scenario(name))
    a, b = run_scenario(sc), run_scenario(sc)
    assert a.event_keys() == b.event_keys()
    assert len(a.event_keys()) > 10
    assert render_json(a, events=True) == render_json(b, events=True)
    assert render_text(a, verbose=True) == render_text(b, verbose=True)
    assert render_html(a) == render_html(b)


def test_the_seed_decides_the_flaky_runs() -> None:
    """Another seed gives a flaky job other luck, hence another log."""
    sc = load_scenario(scenarios.find_scenario("retry-storm-flaky"))
    assert run_scenario(sc).event_keys() != run_scenario(sc.with_seed(sc.seed + 1)).event_keys()


def test_determinism_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    """The event log does not depend on the process or on PYTHONHASHSEED (set and dict ordering)."""
    code = textwrap.dedent("""
        import hashlib, json, logging, sys
        import structlog
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
        from scenarios import find_scenario, load_scenario, run_scenario
        out = {}
        for name in sys.argv[1:]:
            keys = run_scenario(load_scenario(find_scenario(name))).event_keys()
            out[name] = hashlib.sha256(json.dumps(keys).encode()).hexdigest()
        print(json.dumps(out))
    """)
    names = ["crash-between-lease-and-start", "retry-storm-flaky", "cancel-while-shared-run-builds",
             "two-graphs-colliding-on-a-shared-upstream"]
    digests = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=env,
                              timeout=60, check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert digests[0] == digests[1]
    here = {n: _digest(run_scenario(load_scenario(scenarios.find_scenario(n))).event_keys()) for n in names}
    assert here == digests[0]


# -------------------------------------------------------------------------------------------------------- regressions
# Core bugs that `explore` found (progress, I5): the fixed ones stay as regression tests, the open ones are
# strict xfails (remove the mark once fixed).

CANCEL_ONE_OF_TWO_JOINED = """\
# Found by `wantbuild scenario explore downstreams-missing-same-upstream --seed 11` (then w2 came at the same
# instant; since the supervisor batches its messages it needs w2 a moment after w1, before w1's run has leases).
[scenario]
name = "cancel-one-of-two-joined-wants"
[job.raw]
outputs = "raw/{date}"
duration = 300
[job.daily]
outputs = "daily/{date}"
behaviour = "missing_deps"
missing = ["raw/{date}"]
duration = 120
[[timeline]]
at = 0
action = "want"
name = "w1"
refs = ["daily/1"]
[[timeline]]
at = 0
after_event = "WantCreated"
entity = "w-00000001"
action = "want"
name = "w2"
refs = ["daily/1"]
[[timeline]]
at = 1
action = "cancel"
want = "w1"
[expect.wants]
w2 = "Successful"
"""

CANCEL_BORROWED_UPSTREAM = """\
# Found by `wantbuild scenario explore` on a raw <- daily <- agg graph (seed 2).
[scenario]
name = "cancel-the-want-an-upstream-was-borrowed-from"
[job.raw]
outputs = "raw/{d}"
duration = 20
[job.daily]
outputs = "daily/{d}"
behaviour = "missing_deps"
missing = ["raw/{d}"]
duration = 30
[[timeline]]
at = 0
action = "want"
name = "w1"
refs = ["raw/2"]
[[timeline]]
at = 0
action = "want"
name = "w2"
refs = ["daily/2"]
[[timeline]]
at = 1
action = "cancel"
want = "w1"
[expect.wants]
w2 = "Successful"
"""


CANCEL_BORROWED_STATIC_DEP = """\
# Found by `wantbuild scenario explore` on raw <- daily with static deps (seed 1).
[scenario]
name = "cancel-the-want-a-static-dependency-was-borrowed-from"
[job.raw]
outputs = "raw/{d}"
duration = 20
[job.daily]
outputs = "daily/{d}"
deps = ["raw/{d}"]
duration = 30
[[timeline]]
at = 0
action = "want"
name = "w1"
refs = ["raw/1"]
[[timeline]]
at = 0
action = "want"
name = "w2"
refs = ["daily/1"]
[[timeline]]
at = 1
action = "cancel"
want = "w1"
[expect.wants]
w2 = "Successful"
"""


WANT_AGAIN_AFTER_STATIC_DEP_CANCELED = """\
# Found by `wantbuild scenario explore` on raw <- daily with static deps (seed 7).
[scenario]
name = "want-again-after-its-static-dependency-was-canceled"
[job.raw]
outputs = "raw/{d}"
duration = 20
[job.daily]
outputs = "daily/{d}"
deps = ["raw/{d}"]
duration = 30
[[timeline]]
at = 0
action = "want"
name = "w1"
refs = ["daily/1"]
[[timeline]]
at = 0
action = "cancel"
want = "w1"
[[timeline]]
at = 1
action = "want"
name = "w2"
refs = ["daily/1"]
[expect.wants]
w2 = "Successful"
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(CANCEL_ONE_OF_TWO_JOINED, id="cancel-one-of-two-joined-wants"),
        pytest.param(CANCEL_BORROWED_UPSTREAM, id="cancel-the-want-an-upstream-was-borrowed-from"),
        pytest.param(CANCEL_BORROWED_STATIC_DEP, id="cancel-the-want-a-static-dependency-was-borrowed-from"),
        pytest.param(WANT_AGAIN_AFTER_STATIC_DEP_CANCELED, id="want-again-after-its-static-dependency-was-canceled"),
    ],
)
def test_supervisor_i5_regressions(text: str) -> None:
    """I5: ending one want never strands a partition another want waits for (four bugs the explorer found)."""
    r = run_scenario(parse_scenario(text, "regression.toml"))
    assert [str(v) for v in r.violations] == []
    assert r.ok


# -------------------------------------------------------------------------------------------------------- the format

GOOD = """\
[scenario]
name = "t"

[job.daily]
outputs = "daily/{d}"
duration = 10

[[timeline]]
at = 0
action = "want"
name = "a"
refs = ["daily/1"]
"""


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        pytest.param(GOOD.replace("duration = 10", "duraton = 10"), 6, "job.daily.duraton: unknown field",
                     id="unknown-job-field"),
        pytest.param(GOOD.replace("duration = 10", 'behaviour = "explode"'), 6, "job.daily.behaviour",
                     id="bad-behaviour"),
        pytest.param(GOOD.replace("duration = 10", "batch = 0"), 6, "job.daily.batch: must be an integer >= 1",
                     id="batch-zero"),
        pytest.param(GOOD.replace('action = "want"', 'action = "explode"'), 10, "timeline[0].action",
                     id="bad-action"),
        pytest.param(GOOD.replace("at = 0", "at = -5"), 9, "timeline[0].at: must be a number >= 0",
                     id="negative-time"),
        pytest.param(GOOD.replace("at = 0", "at = 1e300"), 9, "timeline[0].at: 1e+300 is past the scenario's end, "
                     "the default horizon of 2592000 s, so this step would never run", id="past-default-horizon"),
        pytest.param(GOOD.replace('name = "t"', 'name = "t"\nhorizon = 100').replace("at = 0", "at = 101"), 10,
                     "timeline[0].at: 101 is past the scenario's end, its [scenario] horizon of 100 s",
                     id="past-horizon"),
        pytest.param(GOOD.replace('refs = ["daily/1"]', 'refs = ["weekly/1"]'), 12,
                     "timeline[0].refs: no job of graph", id="ref-no-job-builds"),
        pytest.param(GOOD.replace('refs = ["daily/1"]', 'refs = ["daily//1"]'), 12, "timeline[0].refs",
                     id="invalid-ref"),
        pytest.param(GOOD + '\n[[timeline]]\nat = 1\naction = "cancel"\nwant = "zz"\n', 17,
                     "timeline[1].want: no earlier want step is named 'zz'", id="cancel-unknown-want"),
        pytest.param(GOOD + '\n[[timeline]]\nat = 1\naction = "cancel"\ntaint = "zz"\n', 17,
                     "timeline[1].taint: no earlier taint step is named 'zz'", id="cancel-unknown-taint"),
        pytest.param(GOOD + '\n[[timeline]]\nat = 1\naction = "cancel"\ntaint = "zz"\nwant = "a"\n', 14,
                     "a cancel step needs exactly one of want", id="cancel-want-and-taint"),
        pytest.param(GOOD + '\n[[timeline]]\nat = 1\naction = "taint"\nrefs = ["daily/1"]\ncascade = 1\n', 18,
                     "timeline[1].cascade: must be true or false", id="taint-cascade-not-bool"),
        pytest.param(GOOD + "\n[expect]\njob_runs = { mx = 3 }\n", 15, "expect.job_runs.mx", id="bad-bound"),
        pytest.param(GOOD + '\n[expect.wants]\na = "Sucessful"\n', 15, "did you mean 'Successful'",
                     id="bad-want-status"),
        pytest.param(GOOD + '\n[expect.wants]\nb = "Successful"\n', 15, "expect.wants.b: no want step is named",
                     id="expect-unknown-want"),
        pytest.param(GOOD + '\n[expect.wants]\na = { status = "Successful", generation = 1 }\n', 15,
                     "expect.wants.a.generation: unknown field", id="want-expect-field"),
        pytest.param(GOOD + '\n[expect.wants]\na = 3\n', 15,
                     "{ status = ..., latency = ... }, got an integer", id="want-expect-type"),
        pytest.param(GOOD + '\n[expect.partitions]\n"daily/1" = "Lve"\n', 15,
                     "unknown partition status 'Lve'; did you mean 'Live'", id="bad-partition-status"),
        pytest.param(GOOD + '\n[expect.partitions]\n"daily/1" = { status = "Live", latency = 1 }\n', 15,
                     'expect.partitions."daily/1".latency: unknown field', id="partition-expect-field"),
        pytest.param(GOOD + '\n[expect.partitions]\n"daily/1" = [1]\n', 15,
                     "{ status = ..., generation = ... }, got an array", id="partition-expect-type"),
        pytest.param(GOOD.replace("duration = 10", 'behaviour = "flaky"'), 6, "needs a rate", id="flaky-no-rate"),
        pytest.param(GOOD.replace("[job.daily]", "[job.daily]\noutputs2 = 1"), 5, "job.daily.outputs2",
                     id="unknown-field-first-line"),
        pytest.param(GOOD.replace("[scenario]", "[scenaro]"), 1, "unknown top-level key", id="unknown-top"),
        pytest.param("[job.daily\noutputs = 1\n", 1, "not valid TOML", id="bad-toml"),
        pytest.param(GOOD.replace('name = "a"', 'name = "a"\nentity = "w-00000001"'), 12,
                     "timeline[0].entity: only applies together with after_event", id="entity-without-event"),
        pytest.param(GOOD.replace('name = "a"', 'name = "a"\nafter_event = "WantCreatd"'), 12,
                     "did you mean 'WantCreated'", id="unknown-event-type"),
        pytest.param(GOOD + '\n[[timeline]]\nat = 1\naction = "kill"\n', 14, "timeline[1]: a kill step needs exactly",
                     id="kill-needs-a-target"),
    ],
)
def test_validation_errors_name_the_line_and_key(text: str, line: int, needle: str) -> None:
    """A bad scenario raises ScenarioError starting with FILE:LINE: and naming the key."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    msg = str(info.value)
    assert msg.startswith(f"bad.toml:{line}: "), msg
    assert needle in msg
    assert isinstance(info.value, ValueError)
    assert info.value.line == line


@pytest.mark.parametrize("path", [pytest.param(e.path, id=e.name) for e in CATALOG])
def test_dump_reads_back_to_the_same_scenario(path: Path) -> None:
    """dump_scenario writes TOML that parses back into an equal Scenario."""
    sc = load_scenario(path)
    again = parse_scenario(dump_scenario(sc, header="round trip"), "again.toml")
    assert dataclasses.replace(again, path=None) == dataclasses.replace(sc, path=None)


def _docs_example(start: str) -> Any:
    """Run the ```toml block of docs/scenarios.md that starts with ``start``; it must meet its expectations."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "scenarios.md").read_text(encoding="utf-8")
    found = re.search(rf"```toml\n({re.escape(start)}.*?)```", text, re.S)
    assert found is not None
    r = run_scenario(parse_scenario(found.group(1), "docs/scenarios.md"))
    assert [c.name for c in r.failed_checks] == []
    assert r.ok
    return r


def test_the_docs_example_runs_and_passes() -> None:
    """The complete example in docs/scenarios.md parses, runs and meets its expectations."""
    assert _docs_example("# docs-example").metrics.crashes == 1


def test_the_docs_example_of_several_graphs_runs_and_passes() -> None:
    """The example of docs/scenarios.md's "Several graphs" section parses, runs and meets its expectations."""
    r = _docs_example('[scenario]\nname = "reports-on-events"')
    assert r.partitions["reports:events:daily/2026-11-01"] == "Live"


# -------------------------------------------------------------------------------------------------------- the clock


async def test_virtual_clock_wakes_sleepers_by_deadline_then_arrival() -> None:
    """advance() wakes exactly the sleepers due, in (deadline, arrival) order; cancelled ones are dropped."""
    import anyio

    clock = VirtualClock()
    woke: list[str] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append(f"{name}@{clock.now():g}")

    async with anyio.create_task_group() as tg:
        for name, s in (("a", 10), ("b", 5), ("c", 10), ("d", 20)):
            tg.start_soon(sleeper, name, s)
        with anyio.CancelScope() as doomed:
            doomed.cancel()
            await clock.sleep(1)
        await scenarios.run_until_idle()
        assert clock.next_deadline() == 5
        assert clock.advance(10) == 3
        await scenarios.run_until_idle()
        assert woke == ["b@10", "a@10", "c@10"]
        assert clock.next_deadline() == 20
        clock.advance(20)
    assert woke[-1] == "d@20"
    assert clock.next_deadline() is None
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(5)


# -------------------------------------------------------------------------------------------------------- crashes


def test_crash_is_checked_for_replay_fidelity_at_the_crash() -> None:
    """At a crash the World rebuilt from the log equals the live World (I3); the lost run is Lost on restart."""
    r = run_scenario(load_scenario(scenarios.find_scenario("crash-between-lease-and-start")))
    assert len(r.crashes) == 1
    c = r.crashes[0]
    assert c.i3_ok
    assert c.i3_diff == ()
    assert c.trigger.startswith("after PartitionBuilding")
    assert c.lost_runs == ("r-00000001",)
    # JobRunStarted of the first run was pending at the crash: the log has none for it.
    assert not any(e.type == "JobRunStarted" and e.entity_id == "r-00000001" for e in r.events)
    assert [e.type for e in r.events if e.entity_id == "r-00000001"] == ["JobRunQueued", "JobRunLost"]


def test_a_divergence_at_the_crash_is_reported_as_I3(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the live World at the crash differs from the log, the scenario stops with an I3 violation."""
    real = runner_module._copy_world

    def tampered(world: Any) -> Any:
        w = real(world)
        ref = sorted(w.partitions)[0]
        w.partitions[ref] = msgspec.structs.replace(w.partitions[ref], generation=99)
        return w

    monkeypatch.setattr(runner_module, "_copy_world", tampered)
    r = run_scenario(load_scenario(scenarios.find_scenario("crash-between-lease-and-start")))
    assert not r.ok
    assert r.crashes[0].i3_ok is False
    assert r.violations[0].invariant == "I3"
    assert "I3" in r.stopped


class _RebuildsAreViolations(InvariantChecker):
    """A deliberately broken checker: it calls any second build of a partition an I1 violation."""

    def feed(self, rec: Any) -> None:
        super().feed(rec)
        if rec.type == "PartitionBuilding" and self.world.partitions[rec.entity_id].generation >= 2:
            self.violations.append(Violation("I1", rec.seq, f"{rec.entity_id} built again (injected bug)",
                                             (rec.entity_id,)))


def test_a_violation_stops_the_scenario_with_seq_and_entities() -> None:
    """The first violation stops the run; the result names the invariant, the seq and the entities."""
    r = run_scenario(load_scenario(scenarios.find_scenario("crash-between-lease-and-start")),
                     checker_factory=_RebuildsAreViolations)
    assert not r.ok
    v = r.violations[0]
    assert (v.invariant, v.entities) == ("I1", ("daily/1",))
    assert v.seq is not None
    assert f"seq {v.seq}" in r.stopped
    assert any(e.seq == v.seq and e.entity_id == "daily/1" for e in r.events)
    assert not any(e.type == "PartitionLive" for e in r.events)  # it stopped at once: nothing was built


# -------------------------------------------------------------------------------------------------------- reports


def test_reports_text_and_json() -> None:
    """The text report gives the verdict, metrics and crashes; the JSON has the metrics and checks."""
    r = run_scenario(load_scenario(scenarios.find_scenario("crash-during-group-commit")))
    text = render_text(r)
    assert text.startswith("scenario crash-during-group-commit (policy shrink, seed 8): PASS")
    assert "duplicate work 1" in text
    assert "crash at 60 s" in text
    data = json.loads(render_json(r))
    assert data["metrics"]["duplicate_work"] == 1
    assert data["metrics"]["crashes"] == 1
    assert data["ok"] is True
    assert "events" not in data
    assert {c["name"] for c in data["checks"]} >= {"job_runs", "wants.a.status"}


def test_html_report_is_self_contained() -> None:
    """The HTML report has the timeline SVG, crash and collision markers, and nothing fetched from a network."""
    r = run_scenario(load_scenario(scenarios.find_scenario("crash-during-group-commit")))
    html = render_html(r)
    assert html.startswith("<!DOCTYPE html>")
    assert "<svg" in html
    assert "crash at 60 s" in html
    for forbidden in ("http://", "https://", "<script", "<link", "src="):
        assert forbidden not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Headless Chromium renders the report to a non-trivial screenshot."""
    if shutil.which("chromium") is None:
        need("chromium", "install Debian's chromium (`apt-get install chromium`; .ci/run does)")
    r = run_scenario(load_scenario(scenarios.find_scenario("crash-during-group-commit")))
    page = tmp_path / "report.html"
    page.write_text(render_html(r), encoding="utf-8")
    png = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           f"--screenshot={png}", "--window-size=1280,900", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert png.exists(), done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a blank 1280x900 page compresses to a few KB


# -------------------------------------------------------------------------------------------------------- explore


BUGGY_BASE = """\
[scenario]
name = "explore-base"
description = "a graph for explore tests"

[job.daily]
outputs = "daily/{d}"
duration = 30

[explore.params]
d = ["1", "2"]
"""


def test_explore_finds_shrinks_and_writes_an_injected_bug(tmp_path: Path) -> None:
    """With a broken invariant checker, explore finds a failing timeline, shrinks it and writes a reproducer."""
    base = parse_scenario(BUGGY_BASE, "base.toml")
    res = scenarios.explore(base, runs=60, seed=4, out_dir=tmp_path, checker_factory=_RebuildsAreViolations)
    assert not res.ok
    assert res.minimal is not None
    assert res.written is not None
    assert res.reproduced is True
    # The minimal case: something is built, then built again (a taint + want, or a crash that loses it).
    assert 1 <= len(res.minimal.timeline) <= 3, [s.describe() for s in res.minimal.timeline]
    assert any(s.action == "want" for s in res.minimal.timeline)
    again = run_scenario(load_scenario(res.written), checker_factory=_RebuildsAreViolations)
    assert not again.ok
    assert again.violations[0].invariant == "I1"


def test_explore_cli_shrinks_an_expectation_that_cannot_hold(tmp_path: Path) -> None:
    """`explore` on a scenario whose expectation fails for some timelines writes a file that `run` fails on."""
    base = tmp_path / "base.toml"
    base.write_text(BUGGY_BASE + "\n[expect]\njob_runs = { max = 1 }\n", encoding="utf-8")
    out = tmp_path / "found"
    res = CliRunner().invoke(scenario, ["explore", str(base), "--runs", "40", "--seed", "1", "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "job_runs" in res.output
    assert "reproduces it" in res.output
    written = sorted(out.glob("*.toml"))
    assert len(written) == 1
    minimal = load_scenario(written[0])
    assert len(minimal.timeline) <= 2
    rerun = CliRunner().invoke(scenario, ["run", str(written[0])])
    assert rerun.exit_code == 1
    assert "FAIL job_runs" in rerun.output


def test_explore_accepts_a_graph_file_and_says_it_is_alive_in_a_pipe(tmp_path: Path) -> None:
    """A graph file's jobs are simulated and explored, invariants hold; with stderr a pipe (CI), explore prints
    a progress line every 10 timelines."""
    graph = tmp_path / "graph.toml"
    graph.write_text(textwrap.dedent("""\
        [graph]
        name = "g"
        [job.daily]
        outputs = ["daily/{date}"]
        command = ["true"]
        batch = 2
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "wantbuild", "scenario", "explore", str(graph), "--runs", "10",
                           "--seed", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "10 random timelines, every invariant and expectation held" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.startswith("exploring")] == [
        "exploring g: 10/10 timelines run"]


# -------------------------------------------------------------------------------------------------------- the CLI


def test_cli_list() -> None:
    """`list` shows every bundled scenario; `--json` gives name, description and path."""
    res = CliRunner().invoke(scenario, ["list"])
    assert res.exit_code == 0
    assert "identical-wants-racing" in res.output
    data = json.loads(CliRunner().invoke(scenario, ["list", "--json"]).stdout)
    assert {d["name"] for d in data} == {e.name for e in CATALOG}
    assert all(Path(d["path"]).exists() for d in data)


def test_cli_run_by_name_json_and_html(tmp_path: Path) -> None:
    """`run NAME --json --html` exits 0, prints the result as JSON and writes the report."""
    html = tmp_path / "r.html"
    res = CliRunner().invoke(scenario, ["run", "want-arrives-while-building", "--json", "--html", str(html)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["name"] == "want-arrives-while-building"
    assert data["ok"] is True
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_run_text_and_failed_expectation_exit_1(tmp_path: Path) -> None:
    """`run FILE` prints PASS and exits 0; an unmet expectation prints FAIL and exits 1."""
    good = tmp_path / "good.toml"
    good.write_text(GOOD + '\n[expect.wants]\na = "Successful"\n', encoding="utf-8")
    res = CliRunner().invoke(scenario, ["run", str(good)])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD + '\n[expect.wants]\na = "Canceled"\n', encoding="utf-8")
    res = CliRunner().invoke(scenario, ["run", str(bad)])
    assert res.exit_code == 1
    assert "FAIL wants.a.status: expected Canceled, got Successful" in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["run", "no-such-scenario"], "no bundled scenario named 'no-such-scenario'", id="unknown-name"),
        pytest.param(["run"], "give a scenario NAME or FILE, or --all", id="nothing-to-run"),
        pytest.param(["compare", "identical-wants-racing", "--policies", "shrink,bogus"], "unknown policy 'bogus'",
                     id="bad-policy"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    """Usage errors exit 2 with one line on stderr and no traceback."""
    res = CliRunner().invoke(scenario, args)
    assert res.exit_code == 2
    assert needle in res.stderr
    assert "Traceback" not in res.output + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_refuses_a_step_past_the_horizon(tmp_path: Path) -> None:
    """`wantbuild scenario run` of a file with a step that could never run exits 2 naming it (not '0 events')."""
    far = tmp_path / "far.toml"
    far.write_text(GOOD.replace("at = 0", "at = 1e300"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "wantbuild", "scenario", "run", str(far)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout
    assert f"{far}:9: timeline[0].at: 1e+300 is past the scenario's end" in proc.stderr
    assert "events" not in proc.stdout


def test_cli_bad_scenario_file_exits_2(tmp_path: Path) -> None:
    """A bad scenario file: exit 2, one line naming FILE:LINE and the key."""
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("duration = 10", "duraton = 10"), encoding="utf-8")
    res = CliRunner().invoke(scenario, ["run", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:6: job.daily.duraton: unknown field" in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_cli_run_all() -> None:
    """`run --all` runs the whole catalog and shows one row per scenario."""
    res = CliRunner().invoke(scenario, ["run", "--all", "--json"])
    assert res.exit_code == (1 if KNOWN_CORE_BUGS else 0), res.output[-3000:]
    data = json.loads(res.stdout)
    assert [d["name"] for d in data] == [e.name for e in CATALOG]
    assert all(d["ok"] for d in data if d["name"] not in KNOWN_CORE_BUGS)


def test_cli_compare_policies() -> None:
    """`compare` runs one scenario per policy: one row each with the metrics; invariants hold for all."""
    res = CliRunner().invoke(scenario, ["compare", "partially-overlapping-batches", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["policy"] for r in rows] == ["shrink", "defer", "all_or_nothing"]
    assert all(r["invariants_ok"] for r in rows)
    table = CliRunner().invoke(scenario, ["compare", "partially-overlapping-batches", "--policies", "shrink,defer"])
    assert table.exit_code == 0
    for word in ("policy", "job runs", "duplicate work", "shrink", "defer"):
        assert word in table.output
