"""War-games with a standby: a runtime stalled past its simulated lease is replaced, and when it resumes none of
its writes lands; deterministic like every scenario; a short stall changes nothing but time."""

from __future__ import annotations

import re

import pytest

import scenarios
from scenarios import ScenarioError, dump_scenario, load_scenario, parse_scenario, render_json, run_scenario

STALL = """\
[scenario]
name = "stall"
seed = 1

[job.daily]
outputs = "daily/{{day}}"
params = {{ day = "int" }}
batch = 2
concurrency = 2
duration = 60

[[timeline]]
at = 0
action = "want"
name = "w"
refs = ["daily/1..6"]

[[timeline]]
at = 55
action = "stall"
downtime = {downtime}
lease_ttl = 10
"""


def test_a_stalled_leader_is_replaced_and_none_of_its_writes_lands() -> None:
    """stalled-leader-resumes: the standby takes over at stall + lease, marks the frozen runtime's runs Lost and
    stops their jobs; the resumed runtime's writes are all refused; each run ends once, each partition is built by
    one Succeeded run, I1-I6 hold."""
    r = run_scenario(load_scenario(scenarios.find_scenario("stalled-leader-resumes")))
    assert r.ok, r.stopped
    assert r.violations == []
    notes = "\n".join(r.notes)
    assert "t=100: the lease of epoch 1 lapsed; a standby takes over and stops the jobs of" in notes
    refused = re.search(r"the runtime of epoch 1 found its lease gone: (\d+) write\(s\) refused, none landed", notes)
    assert refused is not None, notes
    assert int(refused.group(1)) > 0
    ends: dict[str, list[str]] = {}
    for e in r.events:
        if e.kind == "job_run" and e.type in ("JobRunSucceeded", "JobRunFailed", "JobRunLost", "JobRunCanceled"):
            ends.setdefault(e.entity_id, []).append(e.type)
    assert all(len(v) == 1 for v in ends.values()), ends
    assert sorted(v[0] for v in ends.values()).count("JobRunLost") == 2
    lost_at = {e.entity_id: e.at for e in r.events if e.type == "JobRunLost"}
    assert set(lost_at.values()) == {100.0}


def test_a_stall_is_deterministic() -> None:
    """The same stall scenario twice gives the same log and the same report."""
    sc = load_scenario(scenarios.find_scenario("stalled-leader-resumes"))
    a, b = run_scenario(sc), run_scenario(sc)
    assert a.event_keys() == b.event_keys()
    assert render_json(a, events=True) == render_json(b, events=True)


def test_a_stall_shorter_than_the_lease_only_delays() -> None:
    """A stall within the lease: no takeover, no run Lost, the want still succeeds (later)."""
    short = run_scenario(parse_scenario(STALL.format(downtime=8), "short.toml"))
    none = run_scenario(parse_scenario(STALL.format(downtime=8).split("[[timeline]]\nat = 55")[0], "none.toml"))
    assert short.ok
    assert not [e for e in short.events if e.type == "JobRunLost"]
    assert any("resumes; its lease held" in n for n in short.notes)
    assert [w.status for w in short.wants] == ["Successful"]
    # the two runs that ended at t=60 are recorded when the stall ends (t=63); the third starts then
    assert (none.end_time, short.end_time) == (120, 55 + 8 + 60)


def test_a_stall_step_needs_downtime_and_round_trips() -> None:
    """``stall`` without downtime is refused naming the key; a stall step survives dump and parse."""
    bad = STALL.format(downtime=5).replace("downtime = 5\n", "")
    with pytest.raises(ScenarioError, match="a stall step needs downtime"):
        parse_scenario(bad, "bad.toml")
    sc = parse_scenario(STALL.format(downtime=40), "s.toml")
    again = parse_scenario(dump_scenario(sc, header="round trip"), "again.toml")
    assert again.timeline == sc.timeline
    assert sc.timeline[1].describe() == "t=55 stall for 40 s (lease 10 s)"


def test_failover_mid_backfill_loses_only_the_runs_in_flight() -> None:
    """failover-mid-backfill: the standby (a crash with 1 s downtime) loses the two runs in flight, nothing else;
    every partition ends Live, built once."""
    r = run_scenario(load_scenario(scenarios.find_scenario("failover-mid-backfill")))
    assert r.ok, r.stopped
    assert len(r.crashes) == 1
    assert len(r.crashes[0].lost_runs) == 2
    assert r.partitions == {f"daily/{i}": "Live" for i in range(1, 13)}
    built = [e.entity_id for e in r.events if e.type == "PartitionLive"]
    assert sorted(built) == sorted(r.partitions)  # each built once: the lost runs' partitions were not Live
