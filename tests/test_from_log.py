"""``scenario from-log``: a scenario made from a real log reproduces that log's outcome on the simulated clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from actors import World, rebuild
from eventlog import EventLog
from scenarios import load_scenario, parse_scenario, run_scenario
from scenarios._from_log import dump_replay, scenario_from_log
from supervisor import Graph, JobContext, open_runtime
from wantbuild._cli import cli
from wantbuild._example import example_graph, week_dates


async def _world(db: Path) -> World:
    async with EventLog.open(db, writer=False) as log:
        return await rebuild(log)


def _replay_matches(db: Path, graph: Graph | None = None) -> None:
    """Write the scenario, read it back, run it: the same root wants end in the same statuses, with the same runs."""
    world = anyio.run(_world, db)
    sc = anyio.run(lambda: scenario_from_log(db, graph=graph))
    text = dump_replay(sc, str(db))
    again = parse_scenario(text, "replay.toml")
    r = run_scenario(again)
    assert r.violations == []
    assert [f"{c.name}: {c.expected} != {c.actual}" for c in r.failed_checks] == []
    roots = sorted((w for w in world.wants.values() if not w.source.startswith(("job_run:", "static_deps:"))),
                   key=lambda w: (w.created_at, w.want_id))
    replayed = sorted((w for w in r.wants if w.name), key=lambda w: int(w.name[1:]))  # type: ignore[index]
    assert [str(w.status) for w in roots] == [w.status for w in replayed]
    assert Counter(str(x.status) for x in world.runs.values()) == Counter(x.status for x in r.runs)


def test_demo_log_replays_to_the_same_outcome(tmp_path: Path) -> None:
    """The demo graph run for real (discovered dependencies, a flaky job retried): its replay matches."""
    db = tmp_path / "demo.db"

    async def main() -> None:
        async with open_runtime(db, example_graph(tmp_path / "data", work_seconds=0.01)) as rt:
            await (await rt.want([f"weekly/{week_dates()[0]}"])).done(timeout=30)

    anyio.run(main)
    _replay_matches(db)


def test_failures_cancels_and_ranges_replay(tmp_path: Path) -> None:
    """A want that fails, one canceled mid-run and a range want, with the graph given: all end as they did."""
    db = tmp_path / "mixed.db"
    g = Graph("mixed")

    @g.job("daily", outputs="daily/{date}", params={"date": "date"}, batch=3, retries=1, backoff=0.05)
    async def daily(ctx: JobContext) -> None:
        await anyio.sleep(0.01)
        if any(r.endswith("-13") for r in ctx.partitions):
            raise RuntimeError("unlucky")

    @g.job("slow", outputs="slow/{n}")
    async def slow(ctx: JobContext) -> None:
        await anyio.sleep(5)

    async def main() -> None:
        from supervisor import parse_partition_set

        async with open_runtime(db, g) as rt:
            ok = await rt.want(parse_partition_set(g, ["daily/2026-01-01..2026-01-09"]))
            bad = await rt.want(["daily/2026-01-13"])
            doomed = await rt.want(["slow/1"])
            await ok.done(timeout=10)
            await bad.done(timeout=10)
            await rt.cancel(doomed.want_id)

    anyio.run(main)
    _replay_matches(db, g)


def test_from_log_cli_window(tmp_path: Path) -> None:
    """The CLI writes a scenario file; --from after every want is refused with a clear message."""
    db = tmp_path / "w.db"
    g = Graph("w")

    @g.job("a", outputs="a/{x}")
    async def a(ctx: JobContext) -> None:
        return None

    async def main() -> None:
        async with open_runtime(db, g) as rt:
            await (await rt.want(["a/1"])).done(timeout=10)

    anyio.run(main)
    out = tmp_path / "replay.toml"
    res = CliRunner().invoke(cli, ["scenario", "from-log", str(db), "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert run_scenario(load_scenario(out)).ok
    res = CliRunner().invoke(cli, ["scenario", "from-log", str(db), "--from", "2999-01-01"], catch_exceptions=False)
    assert res.exit_code == 2
    assert "no want was created" in res.output


@pytest.mark.parametrize("name", ["demo-replayed"])
def test_bundled_replay_of_the_demo(name: str) -> None:
    """The bundled war-game made from the demo's log meets its expectations (the demo's outcome and runs)."""
    import scenarios

    r = run_scenario(load_scenario(scenarios.find_scenario(name)))
    assert r.ok
