"""``Graph.job_of`` remembers a bounded number of answers (the work in flight), dropping the older half at the bound,
and answers the same for refs it has forgotten."""

from __future__ import annotations

import pytest

import supervisor._graph as graph_mod
import wantbuild


def test_job_of_stays_bounded_and_right_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound the cache keeps at most the bound, the newest refs among them, and every answer is the job."""
    monkeypatch.setattr(graph_mod, "_FOUND_MAX", 8)
    g = wantbuild.Graph("cache")
    g.job("raw", outputs="raw/{d}")(lambda ctx: None)
    g.job("daily", outputs="daily/{d}")(lambda ctx: None)
    refs = [f"{job}/{i}" for i in range(20) for job in ("raw", "daily")]
    for ref in refs:
        assert g.job_of(ref).name == ref.partition("/")[0]
    found = g._found
    assert 0 < len(found) <= 8
    assert refs[-1] in found
    assert refs[0] not in found
    for ref in refs:  # forgotten or not, the same answer
        assert g.job_of(ref).name == ref.partition("/")[0]


def test_job_of_remembers_twice_the_refs_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Told how many refs are in flight, the cache keeps at least twice that many past its own bound, and shrinks
    toward the bound once told fewer."""
    monkeypatch.setattr(graph_mod, "_FOUND_MAX", 8)
    g = wantbuild.Graph("cache")
    g.job("daily", outputs="daily/{d}")(lambda ctx: None)
    g.in_flight(20)
    assert g.refs_in_flight == 20
    refs = [f"daily/{i}" for i in range(40)]
    for ref in refs:
        g.job_of(ref)
    assert len(g._found) == 40  # under 2 x 20: nothing forgotten
    g.in_flight(0)
    g.job_of("daily/new")  # past the bound again: the next miss drops the older half
    assert len(g._found) <= 21
    assert "daily/new" in g._found
    assert g.job_of("daily/0").name == "daily"
