"""War-games of issue 16: a backfill and a priority schedule sharing a pool, a schedule across a crash."""

from __future__ import annotations

import dataclasses

import scenarios
from scenarios import load_scenario, run_scenario


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
