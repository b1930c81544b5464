"""The embedding API: the front door, several runtimes in one process, events, explain, handles."""

from __future__ import annotations

import inspect
from pathlib import Path

import anyio
import pytest

import actors
import eventlog
import supervisor
import wantbuild
from wantbuild import (
    Graph,
    JobContext,
    JobRunStatus,
    MissingDeps,
    Record,
    WantbuildError,
    WantStatus,
)


def test_all_lists_exactly_the_public_names() -> None:
    """``wantbuild.__all__`` is every public name of the module, and nothing else."""
    public = {name for name in vars(wantbuild) if not name.startswith("_")} | {"__version__"}
    assert sorted(public) == sorted(wantbuild.__all__)


def test_every_error_of_the_core_is_exported() -> None:
    """Every public WantbuildError subclass of the packages underneath is reachable as ``wantbuild.X``."""
    core = {
        obj
        for module in (eventlog, actors, supervisor)
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name)) and issubclass(obj, WantbuildError)
    }
    missing = sorted(cls.__name__ for cls in core if getattr(wantbuild, cls.__name__, None) is not cls)
    assert missing == []


def test_open_is_the_runtime_context_manager() -> None:
    """``wantbuild.open`` is ``supervisor.open_runtime`` and the version is a string."""
    assert wantbuild.open is supervisor.open_runtime
    assert isinstance(wantbuild.__version__, str)
    assert wantbuild.__version__


def chain(name: str, *, gate: anyio.Event | None = None) -> tuple[Graph, dict[str, int]]:
    """raw/{i} <- daily/{i}; daily reports raw missing until it is built. ``gate`` holds raw's build."""
    g = Graph(name)
    built: dict[str, int] = {}

    @g.job("raw", outputs="raw/{i}")
    async def raw(ctx: JobContext) -> None:
        if gate is not None:
            await gate.wait()
        for ref in ctx.partitions:
            built[ref] = built.get(ref, 0) + 1

    @g.job("daily", outputs="daily/{i}")
    async def daily(ctx: JobContext) -> None:
        missing = [f"raw/{p['i']}" for p in ctx.params if f"raw/{p['i']}" not in built]
        if missing:
            raise MissingDeps(missing)
        for ref in ctx.partitions:
            built[ref] = built.get(ref, 0) + 1

    return g, built


async def test_two_runtimes_in_one_process(tmp_path: Path) -> None:
    """Two runtimes on two logs, side by side in one event loop, each builds its own wants only."""
    g1, built1 = chain("one")
    g2, built2 = chain("two")
    async with wantbuild.open(tmp_path / "a.db", g1) as a, wantbuild.open(tmp_path / "b.db", g2) as b:
        ha = await a.want(["daily/1"])
        hb = await b.want(["daily/2", "daily/3"])
        sa, sb = await ha.done(timeout=10), await hb.done(timeout=10)
        assert (sa.status, sb.status) == (WantStatus.SUCCESSFUL, WantStatus.SUCCESSFUL)
        assert sorted(built1) == ["daily/1", "raw/1"]
        assert sorted(built2) == ["daily/2", "daily/3", "raw/2", "raw/3"]
        assert {p.ref for p in a.partitions()} == {"daily/1", "raw/1"}
        assert {p.ref for p in b.partitions()} == {"daily/2", "daily/3", "raw/2", "raw/3"}
        assert [w.refs for w in a.wants() if w.source == "api"] == [("daily/1",)]
        assert [w.refs for w in b.wants() if w.source == "api"] == [("daily/2", "daily/3")]
    assert a.log.path != b.log.path


async def test_handle_done_returns_the_terminal_state_and_times_out(tmp_path: Path) -> None:
    """``done()`` returns the final WantState; with a timeout it raises TimeoutError while the want builds."""
    gate = anyio.Event()
    g, _ = chain("gated", gate=gate)
    async with wantbuild.open(tmp_path / "h.db", g) as rt:
        h = await rt.want("raw/1", comment="gated")
        with pytest.raises(TimeoutError):
            await h.done(timeout=0.2)
        assert not h.state.terminal
        gate.set()
        final = await h.done(timeout=10)
        assert (final.status, final.comment, final.want_id) == (WantStatus.SUCCESSFUL, "gated", h.want_id)
        assert h.state == final == rt.get_want(h.want_id)


async def test_events_filter_by_kind_entity_and_type(tmp_path: Path) -> None:
    """rt.events from a past seq yields only the matching committed events, in seq order."""
    g, _ = chain("events")
    async with wantbuild.open(tmp_path / "e.db", g) as rt:
        h = await rt.want("daily/1")
        await h.done(timeout=10)
        async def collect(kinds: list[str] | None = None, entity_id: str | None = None,
                          types: list[str] | None = None) -> list[Record]:
            # rt.events follows live, so stop after as many records as the log holds for the same filter
            expected = [r async for r in rt.log.read(1, kinds=kinds, entity_id=entity_id, types=types)]
            got: list[Record] = []
            with anyio.fail_after(10):
                async for rec in rt.events(1, kinds=kinds, entity_id=entity_id, types=types):
                    got.append(rec)
                    if len(got) == len(expected):
                        break
            assert got == expected
            return got

        mine = await collect(kinds=["want"], entity_id=h.want_id)
        assert next(r.type for r in mine) == "WantCreated"
        assert mine[-1].type == "WantSucceeded"
        assert all(r.entity_id == h.want_id for r in mine)
        assert [r.seq for r in mine] == sorted(r.seq for r in mine)
        dep_miss = await collect(types=["JobRunDepMiss"])
        assert [(r.entity_kind, r.type) for r in dep_miss] == [("job_run", "JobRunDepMiss")]
        runs = await collect(kinds=["job_run"])
        assert {r.entity_kind for r in runs} == {"job_run"}

        # Following live: an event committed after the iterator started is delivered.
        seen: list[Record] = []

        async def follow() -> None:
            async for rec in rt.events(kinds=["want"], types=["WantCreated"]):
                seen.append(rec)
                return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.05)
            h2 = await rt.want("raw/9")
        assert [r.entity_id for r in seen] == [h2.want_id]


async def test_explain_walks_a_dep_miss_chain(tmp_path: Path) -> None:
    """A partition waiting after a DepMiss is explained down to the upstream build; the log alone says the same."""
    gate = anyio.Event()
    g, _ = chain("explain", gate=gate)
    async with wantbuild.open(tmp_path / "x.db", g) as rt:
        h = await rt.want("daily/1")
        with anyio.fail_after(10):
            async for _ in rt.events(1, entity_id="raw/1", types=["PartitionBuilding"]):
                break
        ex = await rt.explain("daily/1")
        assert ex.status == "UpstreamWaiting"
        assert [(u.ref, u.status) for u in ex.upstream] == [("raw/1", "Building")]
        assert h.want_id in ex.wants
        dep_miss = [r for r in rt.runs() if r.status is JobRunStatus.DEP_MISS]
        assert len(dep_miss) == 1
        assert dep_miss[0].job_run_id in str(ex)
        assert "raw/1" in str(ex)
        await rt.log.commit()
        async with wantbuild.EventLog.open(tmp_path / "x.db", writer=False) as log:
            world = await wantbuild.rebuild(log)
        assert (await wantbuild.explain(world, None, "daily/1")).to_dict()["upstream"][0]["ref"] == "raw/1"
        gate.set()
        assert (await h.done(timeout=10)).status is WantStatus.SUCCESSFUL
        done = await rt.explain("daily/1")
        assert done.status == "Live"
        assert done.upstream == []


async def test_bad_refs_and_unknown_ids_raise_wantbuild_errors(tmp_path: Path) -> None:
    """A malformed ref is InvalidRef, an unproduced ref NoJobForRef, an unknown id UnknownEntity: all one root."""
    g, _ = chain("bad")
    async with wantbuild.open(tmp_path / "bad.db", g) as rt:
        with pytest.raises(wantbuild.InvalidRef, match="raw//1"):
            await rt.want("raw//1")
        with pytest.raises(wantbuild.NoJobForRef, match="weekly/1"):
            await rt.want("weekly/1")
        with pytest.raises(wantbuild.UnknownEntity):
            rt.get_run("no-such-run")
        with pytest.raises(WantbuildError):
            await rt.cancel("no-such-want")
