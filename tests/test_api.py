"""The embedding API: the front door, several runtimes in one process, events, explain, handles."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

import actors
import eventlog
import scenarios
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

PACKAGES = [pytest.param(p, id=p.__name__) for p in (eventlog, actors, supervisor, scenarios, wantbuild)]
CORE = (eventlog, actors, supervisor)
"""The layers under the public API: wantbuild re-exports their errors. (scenarios is a sibling with its own.)"""


def modules_of(package: ModuleType) -> list[ModuleType]:
    """The package and every module inside it, imported."""
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_exactly_the_public_names(package: ModuleType) -> None:
    """Each package's ``__all__`` is every public name it has (its submodules aside), and nothing else."""
    public = {name for name in dir(package)  # dir(): a name loaded on first use (module __getattr__) counts
              if not name.startswith("_") and not inspect.ismodule(getattr(package, name))}
    dunder = {name for name in package.__all__ if name.startswith("__")}
    assert sorted(public | dunder) == sorted(package.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_error_a_user_can_catch_is_exported(package: ModuleType) -> None:
    """Every WantbuildError subclass defined in any module of a package is in its ``__all__``, and the core's
    are also ``wantbuild.X``."""
    errors = {
        obj
        for module in modules_of(package)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, WantbuildError) and obj.__module__ == module.__name__
    }
    assert sorted(cls.__name__ for cls in errors if getattr(package, cls.__name__, None) is not cls) == []
    if package in CORE:
        assert sorted(cls.__name__ for cls in errors if getattr(wantbuild, cls.__name__, None) is not cls) == []


def test_every_error_is_in_the_hierarchy_drawn_in_the_docstring() -> None:
    """``help(wantbuild)`` draws every exported error."""
    exported = [name for name in wantbuild.__all__
                if inspect.isclass(cls := getattr(wantbuild, name)) and issubclass(cls, WantbuildError)]
    doc = wantbuild.__doc__ or ""
    assert [name for name in exported if not re.search(rf"(^|[ ─]){name}\b", doc, re.M)] == []


def test_open_has_its_real_keyword_signature() -> None:
    """``wantbuild.open`` is ``supervisor.open_runtime``, with every keyword typed and documented."""
    assert wantbuild.open is supervisor.open_runtime
    sig = inspect.signature(wantbuild.open, eval_str=True)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:2]] == ["path", "graph"]
    keywords = [p for p in params[2:] if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert len(keywords) == len(params) - 2 >= 10
    assert [p.name for p in params if p.annotation is inspect.Parameter.empty] == []
    doc = wantbuild.open.__doc__ or ""
    assert [p.name for p in params if f":param {p.name}:" not in doc] == []
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


async def test_get_partition_of_an_unseen_ref_is_missing_unless_no_job_produces_it(tmp_path: Path) -> None:
    """A ref the log never mentioned is Missing at generation 0; one no job produces raises NoJobForRef."""
    g, _ = chain("unseen")
    async with wantbuild.open(tmp_path / "u.db", g) as rt:
        st = rt.get_partition("daily/404")
        assert (st.ref, st.status, st.generation) == ("daily/404", wantbuild.PartitionStatus.MISSING, 0)
        with pytest.raises(wantbuild.NoJobForRef, match="no job of graph 'unseen' produces 'dayly/1'"):
            rt.get_partition("dayly/1")


async def test_cancel_of_a_terminal_want_returns_its_state_and_writes_nothing(tmp_path: Path) -> None:
    """Cancelling a want that already finished is no error: its state comes back unchanged, no event is written."""
    g, _ = chain("cancel-late")
    async with wantbuild.open(tmp_path / "c.db", g) as rt:
        h = await rt.want("daily/1")
        done = await h.done(timeout=10)
        await rt.wait_quiescent()
        last = rt.log.last_seq
        assert await rt.cancel(h.want_id, "too late") == done
        await rt.wait_quiescent()
        assert (rt.get_want(h.want_id).status, rt.log.last_seq) == (WantStatus.SUCCESSFUL, last)


async def test_events_start_when_called_not_when_iterated(tmp_path: Path) -> None:
    """rt.events() without from_seq starts after the last event committed at the call, not at iteration."""
    g, _ = chain("events-start")
    async with wantbuild.open(tmp_path / "s.db", g) as rt:
        await (await rt.want("raw/1")).done(timeout=10)
        stream = rt.events(types=["WantCreated"])
        h = await rt.want("raw/2")
        with anyio.fail_after(10):
            first = await anext(aiter(stream))
        assert (first.type, first.entity_id) == ("WantCreated", h.want_id)


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


def test_scenario_error_is_exported_without_loading_the_runner() -> None:
    """``wantbuild.ScenarioError`` is the scenario runner's error, and ``import wantbuild`` does not load the
    runner (a fresh interpreter)."""
    import scenarios

    assert wantbuild.ScenarioError is scenarios.ScenarioError
    code = "import sys, wantbuild; print('scenarios' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "False"
