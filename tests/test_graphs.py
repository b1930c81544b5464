"""Several graphs, each with its own log and runtime: a job of graph ``reports`` reports ``events:daily/...``
missing, which becomes a want in graph ``events``'s log, served by another runtime (another process on
PostgreSQL); ``reports`` waits for it through that log. Failure and cancellation cross the boundary too, and the
``GRAPH:REF`` syntax is never ambiguous."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import drop_schema, with_schema
from pg_server import PASSWORD

import wantbuild
from eventlog import open_log
from supervisor._upstream import MAX_SEGMENTS

pytestmark = pytest.mark.timeout(90)


def graphs(events_db: str, fail: set[str] | None = None, slow: float = 0.0) -> tuple[
        wantbuild.Graph, wantbuild.Graph, dict[str, int]]:
    """events: daily/{date}; reports: report/{date}, which needs events:daily/{date} (discovered as missing)."""
    built: dict[str, int] = {}
    events = wantbuild.Graph("events")

    @events.job("daily", outputs="daily/{date}")
    async def daily(ctx: wantbuild.JobContext) -> None:
        if slow:
            await ctx.sleep(slow)
        for ref in ctx.partitions:
            if ref in (fail or ()):
                raise RuntimeError(f"cannot build {ref}")
            built[ref] = built.get(ref, 0) + 1

    reports = wantbuild.Graph("reports")
    reports.upstream("events", db=events_db)

    @reports.job("report", outputs="report/{date}")
    async def report(ctx: wantbuild.JobContext) -> None:
        missing = [f"events:daily/{p['date']}" for p in ctx.params if not built.get(f"daily/{p['date']}")]
        if missing:
            raise wantbuild.MissingDeps(missing)
        for ref in ctx.partitions:
            built[ref] = built.get(ref, 0) + 1

    return events, reports, built


@pytest.fixture
def two_logs(log_target: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two logs on the same backend: two SQLite files, or two schemas of one PostgreSQL database."""
    if not log_target.startswith("postgresql://"):
        yield str(tmp_path / "events.db"), str(tmp_path / "reports.db")
        return
    yield log_target, log_target.replace("schema=t_", "schema=r_")
    base, _, schema = log_target.partition("?schema=")
    drop_schema(base, schema.replace("t_", "r_", 1))


async def test_a_partition_of_another_graph_is_wanted_there_and_waited_for(two_logs: tuple[str, str],
                                                                             tmp_path: Path) -> None:
    """reports needs events:daily/X: a want for daily/X appears in events's log (source graph:reports), events's
    runtime builds it once, and the report is built after it; the upstream partitions are Live in reports too."""
    events_db, reports_db = two_logs
    events, reports, built = graphs(events_db)
    async with (wantbuild.open(events_db, events, log_dir=tmp_path / "e") as e,
                wantbuild.open(reports_db, reports, log_dir=tmp_path / "r") as r):
        st = await (await r.want(["report/2026-11-02", "report/2026-11-03"])).done(timeout=30)
        assert st.status == "Successful"
        upstream = e.wants()
        assert [(w.source, w.status) for w in upstream] == [("graph:reports", "Successful")]
        why = await r.explain("events:daily/2026-11-02")
        assert any("partition daily/2026-11-02 of graph 'events'" in d and events_db.split("?")[0][-12:] in d
                   for d in why.details), why.details
        assert sorted(p.ref for p in r.partitions("Live")) == [
            "events:daily/2026-11-02", "events:daily/2026-11-03", "report/2026-11-02", "report/2026-11-03"]
    assert built == {"daily/2026-11-02": 1, "daily/2026-11-03": 1, "report/2026-11-02": 1, "report/2026-11-03": 1}


async def test_an_upstream_failure_fails_the_downstream_want(two_logs: tuple[str, str], tmp_path: Path) -> None:
    """events cannot build daily/X: its want fails there, the upstream run in reports fails saying so, and the
    report waiting on it ends UpstreamFailed."""
    events_db, reports_db = two_logs
    events, reports, _ = graphs(events_db, fail={"daily/2026-11-02"})
    async with (wantbuild.open(events_db, events, log_dir=tmp_path / "e"),
                wantbuild.open(reports_db, reports, log_dir=tmp_path / "r") as r):
        st = await (await r.want("report/2026-11-02")).done(timeout=30)
        assert st.status in ("Failed", "UpstreamFailed")
        assert r.get_partition("report/2026-11-02").status == "UpstreamFailed"
        run = next(x for x in r.runs() if x.job == "upstream.events")
        assert run.status == "Failed"
        assert "graph 'events': want" in run.reason
        assert "ended Failed" in run.reason


async def test_canceling_the_downstream_want_cancels_the_upstream_one(two_logs: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    """Canceling the report's want cancels the upstream run, which cancels its want in events's log."""
    events_db, reports_db = two_logs
    events, reports, _ = graphs(events_db, slow=60)
    async with (wantbuild.open(events_db, events, log_dir=tmp_path / "e") as e,
                wantbuild.open(reports_db, reports, log_dir=tmp_path / "r") as r):
        created = e.events(kinds=["want"])
        handle = await r.want("report/2026-11-02")
        with anyio.fail_after(20):
            async for rec in created:
                upstream = rec.entity_id
                break
        await r.cancel(handle.want_id)
        st = await e.wait_want(upstream, timeout=20)
        assert st.status == "Canceled"
        assert "run r-" in st.reason


async def test_an_unreachable_upstream_log_is_waited_for_not_failed(tmp_path: Path) -> None:
    """The upstream graph's database is down: the upstream run keeps trying (the report waits, nothing fails)
    until the want is canceled."""
    _, reports, _ = graphs("postgresql://nobody:pw@127.0.0.1:1/none?schema=events")
    async with wantbuild.open(tmp_path / "reports.db", reports, log_dir=tmp_path / "r") as r:
        handle = await r.want("report/2026-11-02")
        await anyio.sleep(2.5)
        run = next(x for x in r.runs() if x.job == "upstream.events")
        assert (run.status, handle.state.status) == ("Running", "UpstreamBuilding")
        assert (await r.cancel(handle.want_id)).status == "Canceled"


def test_upstream_refs_are_never_ambiguous() -> None:
    """A graph whose own patterns could produce events:... refs cannot also name graph events; upstream names
    follow the rule; upstream refs up to MAX_SEGMENTS segments belong to the upstream job."""
    g = wantbuild.Graph("g")
    g.job("local", outputs="{kind}/{date}")(_noop)
    with pytest.raises(wantbuild.GraphError, match="can both produce 'events:"):
        g.upstream("events", db="x.db")
    with pytest.raises(wantbuild.GraphError, match="invalid upstream graph name"):
        wantbuild.Graph("h").upstream("Events", db="x.db")
    h = wantbuild.Graph("h")
    h.upstream("events", db="x.db")
    deep = "events:" + "/".join(["s"] * MAX_SEGMENTS)
    assert h.job_of(deep).name == h.job_of("events:daily/2026-11-02").name == "upstream.events"
    with pytest.raises(wantbuild.NoJobForRef):
        h.job_of(deep + "/s")


async def _noop(ctx: wantbuild.JobContext) -> None:
    """A job that builds nothing."""


def test_a_graph_file_names_its_upstream_graphs(tmp_path: Path) -> None:
    """``[upstream.NAME] db = ...`` in a graph file: a relative file is the graph file's folder's; a bad table
    names the fix."""
    module = f"wbgraphs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("async def report(ctx):\n    pass\n")
    path = tmp_path / "reports.toml"
    path.write_text(f'[graph]\nname = "reports"\n\n[upstream.events]\ndb = "events.db"\n\n'
                    f'[job.report]\noutputs = "report/{{date}}"\nfunction = "{module}:report"\n')
    sys.path.insert(0, str(tmp_path))
    try:
        g = wantbuild.load_graph(path)
    finally:
        sys.path.remove(str(tmp_path))
    job = g["upstream.events"]
    assert getattr(job.run, "db", None) == str(tmp_path.resolve() / "events.db")
    path.write_text('[upstream.events]\nurl = "x"\n\n[job.a]\noutputs = "a/{x}"\ncommand = ["true"]\n')
    with pytest.raises(wantbuild.GraphError, match="unknown field 'url'"):
        wantbuild.load_graph(path)


# -- two real processes on PostgreSQL ------------------------------------------------------------------------

JOBS = '''\
import os
from pathlib import Path

from wantbuild import MissingDeps

DATA = Path(os.environ["WB_DATA"])


def note(line):
    with open(DATA / "builds.txt", "a") as f:
        f.write(line + "\\n")


async def daily(ctx):
    for ref in ctx.partitions:
        (DATA / ref.replace("/", "__")).write_text("events")
        note(f"events {ref}")


async def report(ctx):
    missing = [f"events:daily/{p['date']}" for p in ctx.params
               if not (DATA / f"daily__{p['date']}").exists()]
    if missing:
        raise MissingDeps(missing)
    for ref in ctx.partitions:
        note(f"reports {ref}")
'''


def test_two_graphs_served_by_two_processes(pg_server: str, tmp_path: Path) -> None:
    """reports and events served by two ``run --serve`` processes on one database: a report wanted before events
    has a runtime waits (its upstream want queued in events's inbox), then events's runtime starts, builds
    daily/X once, and the report is built; ``want create --wait`` exits 0."""
    tag = uuid.uuid4().hex[:8]
    events_url, reports_url = with_schema(pg_server, f"ev_{tag}"), with_schema(pg_server, f"rp_{tag}")
    module = f"wbgraphs_{tag}"
    (tmp_path / f"{module}.py").write_text(JOBS)
    (tmp_path / "events.toml").write_text(f'[graph]\nname = "events"\n\n[job.daily]\noutputs = "daily/{{date}}"\n'
                                          f'function = "{module}:daily"\n')
    (tmp_path / "reports.toml").write_text(
        f'[graph]\nname = "reports"\n\n[upstream.events]\ndb = "{events_url}"\n\n'
        f'[job.report]\noutputs = "report/{{date}}"\nfunction = "{module}:report"\n')
    env = {**os.environ, "WB_DATA": str(tmp_path), "PYTHONPATH": str(tmp_path)}
    procs: list[subprocess.Popen[bytes]] = []

    def serve(graph: str, url: str) -> None:
        with open(tmp_path / f"{graph}.err", "wb") as err:
            procs.append(subprocess.Popen([sys.executable, "-m", "wantbuild", "run", f"{graph}.toml", "--db", url,
                                           "--serve"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                          stderr=err))

    def wb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wantbuild", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    async def upstream_commands() -> list[str]:
        try:
            async with open_log(events_url, writer=False) as log:
                return [c.payload.get("source", "") for c in await log.commands()]
        except wantbuild.LogNotFoundError:
            return []

    try:
        serve("reports", reports_url)
        deadline = time.monotonic() + 30
        while "Serving" not in (tmp_path / "reports.err").read_text():
            assert procs[0].poll() is None, (tmp_path / "reports.err").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        created = wb("want", "create", "report/2026-11-02", "--db", reports_url)
        assert created.returncode == 0, created.stderr
        # events has no log yet (its runtime never ran): the upstream run waits for it
        while "upstream log not created yet" not in (tmp_path / "reports.err").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert not (tmp_path / "builds.txt").exists()
        serve("events", events_url)
        waited = wb("want", "create", "report/2026-11-02", "--db", reports_url, "--wait")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert (tmp_path / "builds.txt").read_text().splitlines() == [
            "events daily/2026-11-02", "reports report/2026-11-02"]
        assert anyio.run(upstream_commands) == ["graph:reports"]
        every = wb("status", "--db", reports_url, "--all-graphs", "--json")
        assert every.returncode == 0, every.stderr
        ours = {d["db"].rsplit("schema=", 1)[1]: d for d in json.loads(every.stdout) if tag in d["db"]}
        assert sorted(ours) == [f"ev_{tag}", f"rp_{tag}"]
        assert all(d["runtime_running"] for d in ours.values())
        # want list / explain --all-graphs: every graph's log of the database, each under its URL
        listed = wb("want", "list", "--db", events_url, "--all-graphs", "--json")
        assert listed.returncode == 0, listed.stderr
        wants = {d["db"].rsplit("schema=", 1)[1]: d["wants"] for d in json.loads(listed.stdout) if tag in d["db"]}
        assert sorted(wants) == [f"ev_{tag}", f"rp_{tag}"]
        assert [(w["source"], w["status"]) for w in wants[f"ev_{tag}"]] == [("graph:reports", "Successful")]
        assert [w["status"] for w in wants[f"rp_{tag}"]] == ["Successful"] * len(wants[f"rp_{tag}"])
        assert any(w["source"] != "graph:reports" for w in wants[f"rp_{tag}"])
        explained = wb("explain", "report/2026-11-02", "--db", reports_url, "--all-graphs", "--json")
        assert explained.returncode == 0, explained.stderr
        found = {d["db"].rsplit("schema=", 1)[1]: d for d in json.loads(explained.stdout) if tag in d["db"]}
        assert {k: d["status"] for k, d in found.items()} == {f"ev_{tag}": "Missing", f"rp_{tag}": "Live"}
        text = wb("want", "list", "--db", reports_url, "--all-graphs")
        assert text.returncode == 0, text.stderr
        for shown in (f"schema=ev_{tag}", f"schema=rp_{tag}", "graph:reports"):  # each log named, its wants
            assert shown in text.stdout, text.stdout
        assert PASSWORD not in text.stdout
        for url in (events_url, reports_url):
            verify = wb("replay", url, "--verify")
            assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        drop_schema(pg_server, f"ev_{tag}")
        drop_schema(pg_server, f"rp_{tag}")


@pytest.mark.parametrize("command", [["status"], ["want", "list"], ["explain", "daily/1"]])
def test_all_graphs_refuses_a_sqlite_file(command: list[str], tmp_path: Path) -> None:
    """--all-graphs on a SQLite file (one graph per file) is one error naming the file and what to run instead."""
    from click.testing import CliRunner

    from wantbuild._cli import cli

    db = tmp_path / "one.db"
    result = CliRunner().invoke(cli, [*command, "--db", str(db), "--all-graphs"])
    assert result.exit_code == 1, result.output
    assert f"{db} is a SQLite file, which holds one graph" in result.output
    assert f"wantbuild {' '.join(command[:2] if command[0] == 'want' else command[:1])} --db FILE" in result.output
