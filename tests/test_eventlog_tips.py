"""The log writer's tip cache (issue 15): the packed tier against a dict model, and the writer's two tiers against
the log itself, with shedding, forgotten tips, failed commits and stale appends, on both backends."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_schema, with_schema
from eventlog_helpers import ThingChanged, open_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import CommitError, ConcurrencyError
from eventlog._core import LogCore, hot_tips
from eventlog._tips import LIMIT, PackedTips

pytestmark = pytest.mark.timeout(120)

KINDS = ("thing", "other")
ids = st.sampled_from([f"e{i}" for i in range(8)])
tips = st.tuples(st.integers(1, 2**45), st.integers(1, 2**45), st.integers(1, 2**70))
ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KINDS), ids, tips),
    st.tuples(st.just("take"), st.sampled_from(KINDS), ids),
    st.tuples(st.just("discard"), st.sampled_from(KINDS), st.lists(ids, max_size=4)),
    st.tuples(st.just("shed"), st.integers(0, 10)),
    st.tuples(st.just("clear"),),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=60))
def test_packed_tips_behave_as_a_dict_of_tips(script: list[tuple[Any, ...]]) -> None:
    """PackedTips keeps exactly the tips a dict would (those that fit), and shedding keeps the newest of each kind."""
    packed = PackedTips()
    model: dict[str, dict[str, tuple[int, int, int]]] = {k: {} for k in KINDS}
    for op in script:
        if op[0] == "put":
            _, kind, eid, tip = op
            kept = packed.put(kind, eid, *tip)
            assert kept == (tip[0] < LIMIT and tip[1] < LIMIT)
            if kept:
                model[kind][eid] = tip
            else:
                model[kind].pop(eid, None)
        elif op[0] == "take":
            _, kind, eid = op
            assert packed.take(kind, eid) == model[kind].pop(eid, None)
        elif op[0] == "discard":
            _, kind, eids = op
            gone = {e for e in eids if e in model[kind]}
            assert packed.discard(kind, eids) == len(gone)
            for e in gone:
                del model[kind][e]
        elif op[0] == "shed":
            keep = op[1]
            packed.shed(keep)
            assert len(packed) <= keep
            left = list(packed.items())
            for kind in KINDS:
                mine = [(eid, tip) for k, eid, tip in left if k == kind]
                order = list(model[kind].items())
                assert mine == order[len(order) - len(mine):]  # the newest, in order, with their tips
                model[kind] = dict(mine)
        else:
            packed.clear()
            model = {k: {} for k in KINDS}
        assert len(packed) == sum(len(d) for d in model.values())
        for kind in KINDS:
            for eid in [f"e{i}" for i in range(8)]:
                assert packed.get(kind, eid) == model[kind].get(eid)


entities = st.tuples(st.sampled_from(KINDS), st.integers(0, 11))
rounds = st.one_of(
    # appends of one batch (at most one per entity), some with a stale expectation, the batch failing or not
    st.tuples(st.just("appends"), st.lists(st.tuples(entities, st.booleans()), min_size=1, max_size=8,
                                          unique_by=lambda a: a[0]), st.booleans()),
    st.tuples(st.just("forget"), st.sampled_from(KINDS), st.lists(st.integers(0, 11), max_size=6)),
    st.tuples(st.just("resize"), st.integers(1, 9)),
)


async def run_rounds(target: str, script: list[tuple[Any, ...]]) -> None:
    """Drive the writer through ``script``; after each round every cached tip is the log's, in one tier at most."""
    model: dict[tuple[str, str], int] = {}
    async with open_log(target, entity_cache_size=6) as log:
        real_write = log._db_write
        fail = False

        async def flaky(*args: Any) -> None:
            if fail:
                raise OSError("injected: the batch did not commit")
            await real_write(*args)

        log._db_write = flaky  # type: ignore[method-assign,assignment]
        log._hot_least = 2  # so that tips go to the packed tier and back within a few entities
        log.entity_cache_size = 6
        for r in script:
            if r[0] == "appends":
                _, appends, fail = r
                futs = []
                for (kind, i), stale in appends:
                    eid = f"e{i}"
                    have = model.get((kind, eid), 0)
                    stale = stale and have > 0
                    futs.append(log.submit(kind, eid, have - 1 if stale else have, ThingChanged(n=have)))
                results = await asyncio.gather(*futs, return_exceptions=True)
                for ((kind, i), stale), got in zip(appends, results, strict=True):
                    key = (kind, f"e{i}")
                    stale = stale and model.get(key, 0) > 0
                    if stale:
                        assert isinstance(got, ConcurrencyError), got
                    elif fail:
                        assert isinstance(got, CommitError), got
                    else:
                        assert not isinstance(got, BaseException), got
                        assert got.entity_seq == model.get(key, 0) + 1
                        model[key] = got.entity_seq
                fail = False
            elif r[0] == "forget":
                log.forget_tips(r[1], [f"e{i}" for i in r[2]])
            else:
                log.entity_cache_size = r[1]
            await check_tips(log, model)
        report = await log.verify()
        assert report.ok, str(report)


async def check_tips(log: LogCore, model: dict[tuple[str, str], int]) -> None:
    hot = {(k, eid): (e.key, e.cseq, e.ceseq) for k, d in log._cache.items() for eid, e in d.items()}
    assert all(e.in_db and (e.pseq, e.peseq) == (e.cseq, e.ceseq) and (e.kind, e.eid) == (k, eid)
               for k, d in log._cache.items() for eid, e in d.items())
    packed = {(k, eid): tip for k, eid, tip in log._packed.items()}
    assert not hot.keys() & packed.keys()
    assert len(packed) <= log.entity_cache_size - hot_tips(log.entity_cache_size, 2)
    stored = {(k, eid): (ek, s, es) for ek, k, eid, s, es in await log._db_lookup(list(model))}
    for key, tip in itertools.chain(hot.items(), packed.items()):
        assert stored[key] == tip, key
    for (kind, eid), eseq in model.items():
        assert await log.entity_seq(kind, eid) == eseq


settings_ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(st.lists(rounds, min_size=1, max_size=25))
def test_the_writer_tip_cache_follows_the_log(script: list[tuple[Any, ...]]) -> None:
    """Through shedding to the packed tier and out of it, forgotten tips, resizes, failed batches and stale appends,
    every tip the writer caches is the log's committed one and every append gets the next entity_seq (SQLite)."""
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run_rounds(str(Path(d) / "log.db"), script))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rounds, min_size=1, max_size=25))
def test_the_writer_tip_cache_follows_the_log_on_postgres(pg_server: str, script: list[tuple[Any, ...]]) -> None:
    """The same on a PostgreSQL log: the tip cache is the backends' shared code."""
    schema = f"t_tips_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(run_rounds(with_schema(pg_server, schema), script))
    finally:
        drop_schema(pg_server, schema)
