"""War-games of issue 16: a backfill and a priority schedule sharing a pool, a schedule across a crash."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scenarios
from scenarios import load_scenario, parse_scenario, run_scenario
from supervisor import _lazy


def test_priority_schedule_waits_at_most_one_slot_behind_the_backfill() -> None:
    """In the shared pool, each nightly want ends within one backfill run (700 s) plus its own (300 s); without its
    priority, the first one waits behind the whole queued backfill."""
    sc = load_scenario(scenarios.find_scenario("backfill-and-schedule-share-a-pool"))
    r = run_scenario(sc)
    assert r.ok
    nightly = [w for w in r.wants if w.source == "schedule:nightly"]
    assert len(nightly) == 3
    assert all(w.status == "Successful" and w.latency is not None and w.latency <= 700 + 300 for w in nightly)
    flat = dataclasses.replace(sc, schedules=tuple(dataclasses.replace(s, priority=0) for s in sc.schedules))
    slow = [w for w in run_scenario(flat).wants if w.source == "schedule:nightly"]
    assert max(w.latency or 0 for w in slow) > 10 * 700


def test_schedule_across_a_crash_ticks_exactly_once() -> None:
    """A crash between a tick and its want, three hours down: one want per tick, none missed, none doubled."""
    r = run_scenario(load_scenario(scenarios.find_scenario("schedule-across-a-crash")))
    assert r.ok
    ticks = sorted(w.want_id for w in r.wants if w.source == "schedule:every-hour")
    assert ticks == sorted(set(ticks))
    assert len(ticks) == 12
    assert all(w.status == "Successful" for w in r.wants)


def test_new_fields_survive_dump_and_parse() -> None:
    """Pools, schedules, typed params, pools on jobs, priorities and scripts are written back as they were read."""
    from scenarios import dump_scenario, parse_scenario

    for name in ("backfill-and-schedule-share-a-pool", "schedule-across-a-crash", "demo-replayed"):
        sc = load_scenario(scenarios.find_scenario(name))
        assert parse_scenario(dump_scenario(sc), f"{name}.toml") == sc


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crash_at=st.floats(0, 1500), downtime=st.sampled_from([0.0, 600.0]), priority=st.integers(0, 2))
def test_range_want_across_a_crash_completes(monkeypatch: pytest.MonkeyPatch, crash_at: float, downtime: float,
                                             priority: int) -> None:
    """A range want planned lazily (a small window) with a competing priority want, crashed anywhere: both end
    Successful, every partition Live, invariants I1-I6 hold throughout and across the crash."""
    monkeypatch.setattr(_lazy, "WINDOW", 40)
    monkeypatch.setattr(_lazy, "CHUNK", 15)
    sc = parse_scenario(f"""
[scenario]
name = "range-crash"
[job.daily]
outputs = "daily/{{date}}"
params = {{ date = "date" }}
batch = 7
concurrency = 3
duration = 60
[[timeline]]
at = 0
action = "want"
name = "backfill"
refs = ["daily/1970-01-01..1970-05-20"]
[[timeline]]
at = 300
action = "want"
name = "today"
refs = ["daily/1970-06-01"]
priority = {priority}
[[timeline]]
at = {crash_at}
action = "crash"
downtime = {downtime}
[expect]
all_terminal = true
[expect.wants]
backfill = "Successful"
today = "Successful"
""", "range-crash.toml")
    r = run_scenario(sc)
    assert r.violations == []
    assert r.ok, [f"{c.name}: {c.expected} != {c.actual}" for c in r.failed_checks]


def test_compare_across_pool_sizes() -> None:
    """scenario compare --pool NAME=SIZES runs every policy at every size: a bigger pool ends the backfill sooner."""
    import json

    from click.testing import CliRunner

    from wantbuild._cli import cli

    res = CliRunner().invoke(cli, ["scenario", "compare", "backfill-and-schedule-share-a-pool", "--policies", "shrink",
                                   "--pool", "warehouse=1,4", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["pool"], r["pool_size"]) for r in rows] == [("warehouse", 1), ("warehouse", 4)]
    assert rows[1]["latency_p50"] < rows[0]["latency_p50"] / 3
    bad = CliRunner().invoke(cli, ["scenario", "compare", "backfill-and-schedule-share-a-pool", "--pool", "wh=2"])
    assert bad.exit_code == 2
    assert "has no pool 'wh'" in bad.output
