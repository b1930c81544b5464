"""The compact lineage index (``RunsByRef``: refs kept as hashes in packed arrays) answers exactly as a plain
``ref -> [run ids]`` dict would, through its merges, copies and comparisons; a hash shared by two refs only adds
candidates, which the lineage walks check against the runs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actors._lineage as lin
from actors import JobRunState, JobRunStatus, LineageIndex, World, builder_of, outputs_of

REFS = [f"{job}/{d}" for job in ("raw", "daily", "report") for d in range(6)]


def run(rid: str, built: list[str], read: list[str], failed: list[str] | None = None) -> JobRunState:
    return JobRunState(job_run_id=rid, job="j", status=JobRunStatus.SUCCEEDED, partitions=tuple(built), wants=(),
                       attempt=1, max_attempts=1, created_at=0.0, updated_at=0.0, entity_seq=3,
                       generations=tuple(1 for _ in built), read={r: 1 for r in read},
                       failed={f: "bad" for f in failed or ()})


def model_add(model: dict[str, list[str]], ref: str, rid: str) -> None:
    runs = model.setdefault(ref, [])
    if rid not in runs:
        runs.append(rid)


runs_drawn = st.lists(st.tuples(st.lists(st.sampled_from(REFS), min_size=1, max_size=5, unique=True),
                                st.lists(st.sampled_from(REFS), max_size=5, unique=True),
                                st.lists(st.sampled_from(REFS), max_size=2, unique=True)),
                      max_size=40)


@settings(max_examples=200, deadline=None, database=None)
@given(drawn=runs_drawn, slots=st.sampled_from([2, 4, 8, 1024]), mode=st.sampled_from(["compact", "dict", "switch"]))
def test_the_compact_index_answers_as_a_plain_dict_of_runs(drawn: list[Any], slots: int, mode: str) -> None:
    """Readers and builders of every ref (indexed or not), in order, counts, copies and equality match the model,
    with the refs kept as hashes, in a dict (a World that keeps its states), or moved from the dict to the hashes
    part way (a World that starts to evict)."""
    saved = lin._MIN_SLOTS
    lin._MIN_SLOTS = slots  # small: the table grows (rehashes) every few refs, and probes run into full slots
    try:
        index = LineageIndex(compact=mode == "compact")
        readers: dict[str, list[str]] = {}
        builders: dict[str, list[str]] = {}
        half = None
        for i, (built, read, failed) in enumerate(drawn):
            r = run(f"run{i}", built, read, [f for f in failed if f in built])
            index.add_run(r)
            for ref in r.read:
                model_add(readers, ref, r.job_run_id)
            for ref in r.built():
                model_add(builders, ref, r.job_run_id)
            if i == len(drawn) // 2:
                half = (index.copy(), {k: list(v) for k, v in builders.items()})
                if mode == "switch":
                    index.make_compact()
        assert index.compact == (mode == "compact" or (mode == "switch" and bool(drawn)))
        for ref in [*REFS, "never/1"]:
            assert index.reader_runs(ref) == tuple(readers.get(ref, ()))
            assert index.builder_runs(ref) == tuple(builders.get(ref, ()))
            assert (ref in index.readers) == (ref in readers)
            assert (ref in index.builders) == (ref in builders)
        assert len(index) == len(builders)
        assert len(index.readers) == len(readers)
        assert index.builders.as_dict() == {hash(k): tuple(v) for k, v in builders.items()}
        assert index.readers.as_dict() == {hash(k): tuple(v) for k, v in readers.items()}
        if half is not None:  # a copy taken halfway is unchanged by what the original indexed since
            copied, then = half
            assert copied.builders.as_dict() == {hash(k): tuple(v) for k, v in then.items()}
        lin._MIN_SLOTS = 1024
        again = LineageIndex()  # indexed again with another table size: equal
        for i, (built, read, failed) in enumerate(drawn):
            again.add_run(run(f"run{i}", built, read, [f for f in failed if f in built]))
        assert again.readers == index.readers
        assert again.builders == index.builders
    finally:
        lin._MIN_SLOTS = saved


class Clash(str):
    """A ref whose hash is another's (what two refs sharing a 64-bit hash look like to the index)."""

    def __hash__(self) -> int:
        return 42


@pytest.mark.parametrize("evicting", [True, False])
def test_refs_sharing_a_hash_only_add_candidates_that_the_walks_check(evicting: bool) -> None:
    """Two refs with one hash share an entry (refs kept as hashes, an evicting World); builder_of and outputs_of
    still answer each ref's own runs."""
    world = World(evicting=evicting)
    a, b = Clash("raw/a"), Clash("raw/b")
    for st_ in (run("r1", [a], []), run("r2", [b], []), run("r3", ["daily/x"], [a]), run("r4", ["daily/y"], [b])):
        world.runs[st_.job_run_id] = st_
        world.lineage.add_run(st_)
    assert world.lineage.compact == evicting
    # as hashes both are candidates (the hash is all the index keeps); in a dict keyed by the refs, each its own
    assert world.lineage.builder_runs(a) == (("r1", "r2") if evicting else ("r1",))
    assert world.lineage.builders.as_dict()[42] == ("r1", "r2")  # what equality between two indexes compares
    built_a, built_b = builder_of(world, a, 1), builder_of(world, b, 1)
    assert built_a is not None
    assert built_a.job_run_id == "r1"
    assert built_b is not None
    assert built_b.job_run_id == "r2"
    assert [(o, g, r.job_run_id) for o, g, r in outputs_of(world, a, 1)] == [("daily/x", 1, "r3")]
    assert [(o, g, r.job_run_id) for o, g, r in outputs_of(world, b, 1)] == [("daily/y", 1, "r4")]


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.lists(st.text(max_size=12), max_size=5), max_size=10), st.integers(-60, 60))
def test_packed_run_ids_behave_as_a_list(chunks: list[list[str]], probe: int) -> None:
    """RunIds (the lineage index's run ids in one buffer) index, iterate, count and copy as a list of the ids."""
    ids, model = lin.RunIds(), []
    for chunk in chunks:
        if len(chunk) == 1:
            ids.append(chunk[0])
        else:
            ids.extend(chunk)
        model.extend(chunk)
        assert len(ids) == len(model)
        assert list(ids) == model
        assert list(lin.RunIds(ids)) == model
    if -len(model) <= probe < len(model):
        assert ids[probe] == model[probe]
    else:
        try:
            ids[probe]
        except IndexError:
            pass
        else:
            raise AssertionError(f"RunIds[{probe}] of {len(model)} ids did not raise IndexError")


def test_a_world_that_starts_to_evict_keeps_its_lineage_as_hashes() -> None:
    """A World that keeps its states indexes refs in dicts; make_evicting moves them to hashes, same answers."""
    world = World()
    runs = [run("r1", ["raw/1", "raw/2"], []), run("r2", ["daily/1"], ["raw/1"]), run("r3", ["raw/1"], [])]
    for st_ in runs:
        world.runs[st_.job_run_id] = st_
        world.lineage.add_run(st_)
    assert not world.lineage.compact
    before = (world.lineage.builders.as_dict(), world.lineage.readers.as_dict())
    world.make_evicting()
    assert world.lineage.compact
    assert (world.lineage.builders.as_dict(), world.lineage.readers.as_dict()) == before
    assert world.lineage.builder_runs("raw/1") == ("r1", "r3")
    assert world.lineage.reader_runs("raw/1") == ("r2",)
    later = run("r4", ["raw/2"], ["raw/2"])
    world.runs[later.job_run_id] = later
    world.lineage.add_run(later)
    assert world.lineage.builder_runs("raw/2") == ("r1", "r4")
    assert World(evicting=True).lineage.compact
