"""The web view's model: the World and indices it keeps while following a log equal what a fresh replay gives,
however the records arrive; explain with its index answers exactly what explain without one does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web_helpers import make_demo

from actors import rebuild
from eventlog import EventLog, Record
from scenarios import find_scenario, load_scenario, run_scenario
from supervisor import explain
from wantbuild._web._graphs import derived_tree, lineage
from wantbuild._web._observer import RECENT, Observer

SCENARIOS = ["cancel-while-shared-run-builds", "taint-during-downstream-build", "retry-storm-flaky",
             "dependency-cycle", "ttl-and-sla", "crash-during-group-commit", "partially-overlapping-batches"]


async def read_all(db: Path) -> list[Record]:
    async with EventLog.open(db, writer=False) as log:
        return [r async for r in log.read()]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Record]]:
    """The records of the demo's log and of war-games with cancels, taints, retries, cycles, expiry, crashes."""
    out: dict[str, list[Record]] = {}
    root = tmp_path_factory.mktemp("logs")
    out["demo"] = asyncio.run(read_all(make_demo(root / "demo.db")))
    for name in SCENARIOS:
        work = root / name
        work.mkdir()
        run_scenario(load_scenario(find_scenario(name)), workdir=work)
        out[name] = asyncio.run(read_all(work / "scenario.db"))
    return out


def indices(obs: Observer) -> dict[str, Any]:
    """What the pages read besides the World (orders that depend on arrival are compared as sets)."""
    return {
        "runs_by_want": obs.runs_by_want, "runs_by_ref": obs.runs_by_ref, "wants_by_ref": obs.wants_by_ref,
        "children": obs.children, "retried_by": obs.retried_by, "needs": obs.needs, "needed_by": obs.needed_by,
        "jobs": obs.jobs, "failed_runs": set(obs.failed_runs), "counts": obs.counts,
        "members": {k: {s: set(ids) for s, ids in per.items()} for k, per in obs.members.items()},
        "refs": obs.sorted_refs(),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_following_in_any_batches_equals_indexing_a_replay(logs: dict[str, list[Record]], data: st.DataObject) -> None:
    """Records folded in arbitrary batches give the World, indices and recent records a fresh index gives."""
    name = data.draw(st.sampled_from(sorted(logs)), label="log")
    records = logs[name]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=12), label="cuts"))
    followed = Observer("log.db")
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        followed._apply_batch(records[lo:hi])
    fresh = Observer("log.db")
    for rec in records:
        fresh.world.apply(rec)
    fresh._index_world()
    assert followed.world == fresh.world
    assert indices(followed) == indices(fresh)
    assert followed.counts == fresh.world.counts()
    assert [r.seq for r in followed.recent] == [r.seq for r in records[-RECENT:]]


def test_hook_order_does_not_matter_for_the_recent_records(logs: dict[str, list[Record]]) -> None:
    """Records told slightly out of seq order (as post-commit hooks may be) are kept in seq order."""
    records = logs["demo"]
    obs = Observer("log.db")
    world = obs.world
    swapped = list(records)
    for i in range(0, len(swapped) - 1, 7):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    states = {}
    for rec in records:
        old = world.get(rec.entity_kind, rec.entity_id)
        states[rec.seq] = (old, world.apply(rec))
    for rec in swapped:
        obs.on_commit(rec, *states[rec.seq])
    assert [r.seq for r in obs.recent] == [r.seq for r in records]


async def test_explain_with_the_index_answers_as_explain_without(logs: dict[str, list[Record]]) -> None:
    """For every ref of every log, explain(index=observer) equals the scanning explain."""
    checked = 0
    for records in logs.values():
        obs = Observer("log.db")
        obs._apply_batch(records)
        refs = set(obs.world.partitions) | set(obs.wants_by_ref) | set(obs.runs_by_ref)
        for ref in sorted(refs):
            plain = await explain(obs.world, None, ref)
            fast = await explain(obs.world, None, ref, index=obs)
            assert fast.to_dict() == plain.to_dict()
            checked += 1
    assert checked > 40


def test_lineage_and_derived_trees_follow_the_missing_dependency_reports(logs: dict[str, list[Record]]) -> None:
    """The demo's lineage is raw -> clean -> daily -> weekly, and its derived-want tree holds every want once."""
    obs = Observer("log.db")
    obs._apply_batch(logs["demo"])
    g = lineage(obs, "weekly/2026-11-02")
    levels = {n["ref"].split("/")[0]: n["level"] for n in g["nodes"]}
    assert levels == {"weekly": 0, "daily": -1, "clean": -2, "raw": -3}
    assert g["truncated"] is False
    assert all(e["kind"] == "missing-dependency" for e in g["edges"])
    runs = {e["via"] for e in g["edges"]}
    assert all(obs.world.runs[r].status == "DepMiss" for r in runs)
    down = lineage(obs, "raw/2026-11-04", direction="down")
    assert [(e["upstream"], e["downstream"]) for e in down["edges"]][:1] == [("raw/2026-11-04", "clean/2026-11-04")]
    assert {n["ref"] for n in down["nodes"]} == {"raw/2026-11-04", "clean/2026-11-04", "daily/2026-11-04",
                                                  "weekly/2026-11-02"}
    small = lineage(obs, "weekly/2026-11-02", max_nodes=5)
    assert len(small["nodes"]) == 5
    assert small["truncated"] is True
    shallow = lineage(obs, "weekly/2026-11-02", depth=1)
    assert {n["level"] for n in shallow["nodes"]} == {0, -1}
    assert shallow["truncated"] is True
    tree = derived_tree(obs, "w-00000001")
    assert tree["size"] == len(obs.world.wants)
    assert sorted(tree["order"]) == sorted(obs.world.wants)
    assert tree["mermaid"].count("-->") == len(obs.world.wants) - 1
    cut = derived_tree(obs, "w-00000001", max_nodes=4)
    assert cut["truncated"] is True
    assert cut["size"] == 4
    assert "more" in cut["mermaid"]


def test_mermaid_labels_cannot_break_out_of_the_diagram() -> None:
    """A ref full of Mermaid and HTML syntax becomes entity codes inside its label."""
    from wantbuild._web._graphs import lineage_mermaid, mermaid_text

    nasty = 'x/"]-->y;<img/src=x/onerror=alert(1)>#%;'
    text = mermaid_text(nasty)
    assert not set(re.sub(r"#\d+;", "", text)) & set('"[]<>;%#()')
    nodes = [{"ref": nasty, "status": "Live", "level": 0, "root": True},
             {"ref": "up/1", "status": "Failed", "level": -1, "root": False}]
    chart = lineage_mermaid(nodes, [{"upstream": "up/1", "downstream": nasty, "via": "r-1", "kind": "read"}])
    assert chart.splitlines()[1] == f'    n0["{text}<br/>Live"]'
    assert "    n1 --> n0" in chart


async def test_a_runtime_observer_equals_a_replay_of_its_log(tmp_path: Path) -> None:
    """Mounted on a live runtime (post-commit hook), the indices equal those of a replay once it is quiet."""
    from runtime_graphs import chain_graph

    import wantbuild

    graph, _ = chain_graph(fail_times={"raw/3": 1}, retries=1, batch=2)
    async with wantbuild.open(tmp_path / "rt.db", graph) as rt:
        obs = Observer.for_runtime(rt)
        handle = await rt.want([f"daily/{i}" for i in range(8)])
        await handle.done(timeout=20)
        await rt.wait_quiescent()
        async with EventLog.open(tmp_path / "rt.db", writer=False) as log:
            replayed = Observer("rt.db", await rebuild(log))
        replayed._index_world()
        assert obs.world == replayed.world
        assert indices(obs) == indices(replayed)
        assert obs.retried_by  # raw/3 failed once and was retried


def test_a_wide_explanation_is_cut_breadth_first_and_says_so() -> None:
    """An explanation of 1 + 20 + 400 partitions is cut to 200, nearest levels first, naming how many it left."""
    from wantbuild._web._data import bounded_explanation

    def node(ref: str, upstream: list[dict[str, Any]]) -> dict[str, Any]:
        return {"ref": ref, "status": "UpstreamWaiting", "summary": "", "details": [], "wants": [], "runs": [],
                "upstream": upstream}

    wide = node("top", [node(f"a{i}", [node(f"a{i}/b{j}", []) for j in range(20)]) for i in range(20)])
    cut = bounded_explanation(wide)
    level1 = cut["upstream"]
    assert [n["ref"] for n in level1] == [f"a{i}" for i in range(20)]
    shown = 1 + 20 + sum(len(n["upstream"]) for n in level1)
    assert shown == 200
    assert [len(n["upstream"]) for n in level1] == [20] * 8 + [19] + [0] * 11
    assert level1[8]["details"] == ["… and 1 more upstream partition(s) not shown here"]
    assert level1[19]["details"] == ["… and 20 more upstream partition(s) not shown here"]
    assert bounded_explanation(wide, budget=10_000) == wide


def test_recorded_reads_are_lineage_edges_of_their_own(logs: dict[str, list[Record]]) -> None:
    """The demo's jobs record their reads: the read edges alone give the same chain as the missing-dependency
    reports, each labelled with the Succeeded run that read it."""
    from wantbuild._web._graphs import recorded_edges

    obs = Observer("log.db")
    obs._apply_batch(logs["demo"])
    up = list(recorded_edges(obs, "daily/2026-11-04", "up"))
    assert [(e.upstream, e.kind) for e in up] == [("clean/2026-11-04", "read")]
    assert obs.world.runs[up[0].via].status == "Succeeded"
    down = list(recorded_edges(obs, "daily/2026-11-04", "down"))
    assert [(e.downstream, e.kind) for e in down] == [("weekly/2026-11-02", "read")]
    assert list(recorded_edges(obs, "raw/2026-11-04", "up")) == []
