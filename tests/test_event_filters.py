"""Event filters (by ref or ref pattern, job, run, want) on rt.history, rt.events and the log."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from lineage_graphs import lineage_graph

from actors import EventFilter, JobRunQueued, PartitionBuilding, WantCreated, compile_pattern, fold
from eventlog import Record
from supervisor import Graph, JobContext, open_runtime, parse_partition_set


def entities(records: list[Record]) -> set[str]:
    return {f"{r.entity_kind}:{r.entity_id}" for r in records}


@pytest.mark.parametrize(("pattern", "ref", "matches"), [
    pytest.param("daily/*", "daily/2026-11-02", True, id="star"),
    pytest.param("daily/*", "daily/2026/11", False, id="star-stays-in-segment"),
    pytest.param("daily/**", "daily/2026/11", True, id="double-star"),
    pytest.param("daily/2026-11-0?", "daily/2026-11-03", True, id="question"),
    pytest.param("daily/{date}", "daily/2026-11-02", True, id="placeholder"),
    pytest.param("daily/{date}", "daily/", False, id="placeholder-not-empty"),
    pytest.param("s3://b/x.[1]", "s3://b/x.[1]", True, id="literal-specials"),
])
def test_ref_patterns(pattern: str, ref: str, matches: bool) -> None:
    """Globs stay within a segment unless **; a job pattern's {placeholder} matches a non-empty segment part."""
    assert (compile_pattern(pattern).fullmatch(ref) is not None) is matches


def test_a_pattern_with_an_open_brace_is_refused() -> None:
    """An unclosed placeholder is an error naming the pattern."""
    with pytest.raises(ValueError, match=r"'daily/\{date': .* never closed"):
        compile_pattern("daily/{date")


async def test_history_filters(tmp_path: Path) -> None:
    """By ref: the partition, the runs that built it, the wants naming it; by job, run and want likewise."""
    g, _ = lineage_graph()
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want(["daily/1", "daily/2"])
        await h.done(timeout=10)
        raw1_runs = {r.job_run_id for r in rt.runs() if "raw/1" in r.partitions}
        derived = {w.want_id for w in rt.wants() if "raw/1" in w.refs}
        got = entities(await rt.history(refs=["raw/1"]))
        assert got == {"partition:raw/1", *(f"job_run:{r}" for r in raw1_runs), *(f"want:{w}" for w in derived)}
        by_pattern = entities(await rt.history(patterns=["raw/*"], kind="partition"))
        assert by_pattern == {"partition:raw/1", "partition:raw/2"}
        by_job = await rt.history(jobs=["daily"])
        assert {r.entity_kind for r in by_job} == {"job_run", "partition"}
        assert all(r.entity_id.startswith(("daily/", "r-")) for r in by_job)
        one_run = sorted(raw1_runs)[0]
        by_run = await rt.history(runs=[one_run])
        assert {(r.entity_kind, r.entity_id) for r in by_run} == {("job_run", one_run), ("partition", "raw/1")}
        by_want = entities(await rt.history(wants=[h.want_id]))
        serving = {r.job_run_id for r in rt.runs() if h.want_id in r.wants}
        assert by_want == {f"want:{h.want_id}", *(f"job_run:{r}" for r in serving)}
        both = await rt.history(refs=["raw/1"], types=["PartitionLive"])
        assert [(r.entity_id, r.type) for r in both] == [("raw/1", "PartitionLive")]


async def test_events_follow_with_a_filter(tmp_path: Path) -> None:
    """rt.events(patterns=...) follows only the matching partitions' events (and their runs')."""
    g, _ = lineage_graph()
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        await (await rt.want("raw/1")).done(timeout=10)
        it = rt.events(refs=["raw/2"], kinds=["partition"])
        await (await rt.want(["raw/2", "raw/3"])).done(timeout=10)
        seen: list[str] = []
        with anyio.fail_after(5):
            async for rec in it:
                seen.append(f"{rec.entity_id} {rec.type}")
                if rec.type == "PartitionLive":
                    break
        assert seen == ["raw/2 PartitionBuilding", "raw/2 PartitionLive"]


def test_filter_fields_combine_with_and() -> None:
    """Within a field any value matches; across fields all must: a job and a pattern together narrow; a filter
    seeded with a World knows runs queued before it started."""
    queued = Record(1, "job_run", "r-1", 1, JobRunQueued(job="daily", partitions=("daily/1", "daily/2")), 0.0)
    other = Record(2, "job_run", "r-2", 1, JobRunQueued(job="raw", partitions=("raw/2",)), 0.0)
    later = [Record(3 + i, "partition", ref, 1, PartitionBuilding(job_run_id=run), 0.0)
             for i, (ref, run) in enumerate([("daily/1", "r-1"), ("daily/2", "r-1"), ("raw/2", "r-2")])]
    flt = EventFilter(jobs=["daily"], patterns=["*/2"])
    assert [r.seq for r in [queued, other, *later] if flt(r)] == [1, 4]
    assert EventFilter().empty
    assert not flt.empty
    world = fold([queued, other])
    seeded = EventFilter(jobs=["daily"], patterns=["*/2"]).seed(world)
    assert [r.seq for r in later if seeded(r)] == [4]


def test_a_range_want_is_named_by_the_refs_of_its_set() -> None:
    """A range want stores its set, not its refs: a ref filter keeps it when the set covers the ref (tested without
    expanding the set), a pattern when one of its refs matches; a ref outside the range leaves it out."""
    g = Graph("ranges")
    g.job("daily", outputs="daily/{date}", params={"date": "date"})(_noop)
    year = parse_partition_set(g, ["daily/2026-01-01..2026-12-31"])
    created = Record(1, "want", "w-1", 1, WantCreated(refs=(), parts=year.to_json()), 0.0)
    assert EventFilter(refs=["daily/2026-07-04"])(created)
    assert not EventFilter(refs=["daily/2027-01-01"])(created)
    assert EventFilter(patterns=["daily/2026-12-*"])(created)
    assert not EventFilter(patterns=["daily/2025-*"])(created)


async def _noop(ctx: JobContext) -> None:
    return None
