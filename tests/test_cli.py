"""The ``wantbuild`` command line: real subprocess runs (demo, run --serve, SIGKILL + restart) and CliRunner."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from rich.console import Console
from rich.spinner import Spinner

from actors import JOB_RUN, PARTITION, WANT, JobRunStatus, Machine, WantCreated, WantSucceeded, rebuild
from eventlog import EventLog, LogNotFoundError
from supervisor import Graph, JobContext, open_runtime
from wantbuild._build import Session, Snapshot, progress_line, show_progress
from wantbuild._cli import cli

CLI = [sys.executable, "-m", "wantbuild"]
DEMO_WEEKLY = "weekly/2026-11-02"

JOBS = '''\
import os
import re
from pathlib import Path

import anyio

from wantbuild import MissingDeps

DATA = Path(__file__).parent / "data"


def path_of(ref):
    return DATA / ref.replace("/", "__")


async def raw(ctx):
    slow = float(os.environ.get("WB_TEST_SLOW", "0"))
    if slow:
        await anyio.sleep(slow)
    DATA.mkdir(exist_ok=True)
    for ref in ctx.partitions:
        path_of(ref).write_text("raw")


async def daily(ctx):
    missing = [f"raw/{p['i']}" for p in ctx.params if not path_of(f"raw/{p['i']}").exists()]
    if missing:
        raise MissingDeps(missing)
    DATA.mkdir(exist_ok=True)
    for ref in ctx.partitions:
        path_of(ref).write_text("daily")
'''

GRAPH = '''\
[job.raw]
outputs = "raw/{{i}}"
function = "{module}:raw"
batch = 4

[job.daily]
outputs = "daily/{{i}}"
function = "{module}:daily"
'''


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def wb(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)


def one_line(text: str) -> str:
    """The text is exactly one line (and no traceback): return it."""
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    """A graph file with in-process function jobs raw/{i} <- daily/{i} (module named uniquely per test)."""
    module = f"wbjobs_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(JOBS)
    path = tmp_path / "graph.toml"
    path.write_text(GRAPH.format(module=module))
    return path


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where ``wantbuild demo`` ran once (through the installed console script when there is one)."""
    where = tmp_path_factory.mktemp("demo")
    script = Path(sys.executable).parent / "wantbuild"
    cmd = [str(script), "demo"] if script.exists() else [*CLI, "demo"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=where, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    assert "Successful" in proc.stdout
    assert "Outcome" in proc.stdout
    assert "Traceback" not in proc.stderr
    return where


@pytest.fixture
def demo_db(demo_dir: Path) -> Path:
    return demo_dir / "wantbuild.db"


def load(db: Path) -> Any:
    async def main() -> Any:
        async with EventLog.open(db, writer=False) as log:
            return await rebuild(log)

    return anyio.run(main)


# -- demo ------------------------------------------------------------------------------------------------


def test_demo_builds_the_week_and_derived_wants(demo_db: Path) -> None:
    """The demo leaves every partition Live, derived wants Successful, a retried flaky run, a sound log."""
    world = load(demo_db)
    assert world.partition(DEMO_WEEKLY).status == "Live"
    assert sum(1 for p in world.partitions.values() if p.status == "Live") == 22
    assert all(w.status == "Successful" for w in world.wants.values())
    assert any(w.source.startswith("job_run:") for w in world.wants.values())
    assert any(r.attempt > 1 for r in world.runs.values())
    assert (demo_db.parent / "wantbuild-data").is_dir()


def test_demo_twice_says_what_it_did_and_how_to_start_afresh(demo_dir: Path) -> None:
    """A second demo says nothing needed building, how many partitions the log holds, and how to start over."""
    proc = wb("demo", "--json", cwd=demo_dir)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["ok"], out["already_live"], out["runs"], out["live_in_log"]) == (True, True, {}, 22)
    text = wb("demo", cwd=demo_dir)
    assert text.returncode == 0
    said = " ".join(text.stdout.split())
    assert f"Nothing to build: {DEMO_WEEKLY} is already Live in wantbuild.db" in said
    assert "The log holds 22 Live partitions" in said
    assert "To build the demo afresh, delete wantbuild.db and wantbuild-data/" in said
    assert "partitions of these wants: 1 Live" in said


def test_cli_docs_give_the_number_of_partitions_the_demo_builds(demo_db: Path) -> None:
    """docs/cli.md says how many partitions the demo builds, and that is what it builds."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    said = re.search(r"builds? the rest: (\d+) partitions", " ".join(text.split()))
    assert said is not None
    assert int(said.group(1)) == sum(1 for p in load(demo_db).partitions.values() if p.status == "Live")


# -- the live progress display ------------------------------------------------------------------------------

SNAP = Snapshot(live=12, total=22, runs={"Running": 3, "Succeeded": 12, "DepMiss": 2, "Failed": 1}, active_wants=3,
                wants=4)


def rendered(width: int, snap: Snapshot = SNAP) -> str:
    """The live line as a terminal of ``width`` columns shows it."""
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=True, color_system=None).print(
        progress_line(width, snap, elapsed=3.2, spinner=Spinner("dots").render(0)))
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 81, 90, 100, 120, 200])
def test_progress_line_stays_readable_from_80_columns(width: int) -> None:
    """From 80 columns up the live line is one line with the count, the bar and the title whole, nothing cut."""
    line = one_line(rendered(width))
    assert len(line) <= width
    assert "…" not in line
    for part in ("12/22", "━", "partitions Live", "runs: 3 running", "1 failed"):
        assert part in line, (part, line)


def test_progress_line_drops_the_least_important_first() -> None:
    """A wide terminal shows everything; narrower ones drop wants, then dep-miss and ok; the count always stays."""
    wide = one_line(rendered(200))
    assert "12 ok, 2 dep-miss, 1 failed · wants: 3 active / 4" in wide
    assert "0:00:03" in wide
    assert "wants" not in one_line(rendered(100))
    narrow = one_line(rendered(30))
    assert "12/22" in narrow
    assert "…" not in narrow


async def test_live_display_at_80_columns_ends_with_the_full_count(tmp_path: Path) -> None:
    """The display drawn while a runtime builds, on an 80-column terminal, ends showing every partition Live."""
    g = Graph("progress")

    @g.job("raw", outputs="raw/{i}", batch=3)
    async def raw(ctx: JobContext) -> None:
        await anyio.sleep(0.05)

    buf = io.StringIO()
    err = Console(file=buf, width=80, force_terminal=True, color_system=None)
    async with open_runtime(tmp_path / "p.db", g) as rt:
        session = Session.begin(rt)
        handle = await rt.want([f"raw/{i}" for i in range(1, 8)])

        async def wait() -> None:
            await handle.done(timeout=10)

        await show_progress(session, wait, err)
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue()).replace("\r", "\n")
    last = [line for line in drawn.splitlines() if line.strip()][-1]
    assert "partitions Live" in last
    assert "7/7" in last
    assert "…" not in last


# -- read commands on the demo log -------------------------------------------------------------------------


def test_status_and_want_commands_read_the_log(demo_db: Path) -> None:
    """status, want list and want show answer from the log, as tables and as JSON."""
    status = json.loads(invoke("status", "--db", demo_db, "--json").stdout)
    assert status["runtime_running"] is False
    assert status["counts"]["partition"]["Live"] == 22
    assert status["active_wants"] == []
    wants = json.loads(invoke("want", "list", "--db", demo_db, "--json").stdout)
    root = [w for w in wants if w["source"] == "cli"]
    assert root
    assert root[0]["refs"] == [DEMO_WEEKLY]
    shown = json.loads(invoke("want", "show", root[0]["want_id"], "--db", demo_db, "--json").stdout)
    assert shown["want"]["status"] == "Successful"
    assert next(e["type"] for e in shown["history"]) == "WantCreated"
    assert shown["derived_wants"]
    assert shown["runs"]
    table = invoke("want", "show", root[0]["want_id"], "--db", demo_db)
    assert root[0]["want_id"] in table.stdout
    assert "history" in table.stdout
    assert "Successful" in invoke("want", "list", "--db", demo_db, "--status", "successful").stdout


def test_cancel_of_a_finished_want_is_not_an_error(demo_db: Path) -> None:
    """want cancel of a want that is already terminal says so and exits 0 (the want is not active: as asked)."""
    done = invoke("want", "cancel", "w-00000001", "--db", demo_db)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.strip() == "want w-00000001 is already Successful: nothing to cancel"
    doc = json.loads(invoke("want", "cancel", "w-00000001", "--db", demo_db, "--json").stdout)
    assert doc == {"ok": True, "want_id": "w-00000001", "status": "Successful", "already_terminal": True}


def test_explain_a_ref_no_job_produces_says_so(demo_db: Path) -> None:
    """explain of a ref that no job of the given graph produces says so, not 'create a want for it'."""
    graph = Path(__file__).resolve().parent.parent / "docs" / "examples" / "graph.toml"
    result = invoke("explain", "nojob/1", "--graph", graph, "--db", demo_db)
    assert result.exit_code == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == "nojob/1 [Missing]: Missing, and no job of graph 'tour' produces it, so nothing can build it"
    assert "create a want" not in result.stdout


def test_want_show_summarises_a_large_want_unless_all(graph_file: Path, tmp_path: Path) -> None:
    """want show of a want with many refs prints counts per status and what is not done; --all lists every ref."""
    db = tmp_path / "big.db"
    refs = [f"raw/{i}" for i in range(1, 31)]
    assert invoke("want", "create", *refs, "--graph", graph_file, "--db", db).exit_code == 0
    summary = invoke("want", "show", "w-00000001", "--db", db)
    assert summary.exit_code == 0, summary.stderr
    said = " ".join(summary.stdout.split())
    assert "partitions: 30 — 30 Live; showing 0" in said
    assert "job runs serving it: 8 — 8 Succeeded run job status" in said  # few: listed in full
    assert "pass --all to list every partition" in said
    assert len(summary.stdout) < 6000  # WantCreated's 30 refs are shortened in the history too
    listed = re.compile(r"^raw/\d+ +Live", re.M)
    assert listed.findall(summary.stdout) == []
    full = invoke("want", "show", "w-00000001", "--all", "--db", db).stdout
    assert len(listed.findall(full)) == 30
    doc = json.loads(invoke("want", "show", "w-00000001", "--db", db, "--json").stdout)
    assert (doc["complete"], doc["counts"]["partitions"], doc["partitions"]) == (False, {"Live": 30}, [])
    every = json.loads(invoke("want", "show", "w-00000001", "--all", "--db", db, "--json").stdout)
    assert (every["complete"], len(every["partitions"]), len(every["runs"])) == (True, 30, 8)
    assert len(doc["runs"]) == 8


def test_explain_events_and_replay_until(demo_db: Path) -> None:
    """explain shows the builder, events filter, replay --until stops at a seq or a time."""
    ex = json.loads(invoke("explain", DEMO_WEEKLY, "--db", demo_db, "--json").stdout)
    assert ex["status"] == "Live"
    assert "built by" in ex["summary"]
    assert "Live" in invoke("explain", DEMO_WEEKLY, "--db", demo_db).stdout
    lines = invoke("events", "--db", demo_db, "--json", "--kind", "want", "--type", "WantCreated").stdout
    created = [json.loads(line) for line in lines.splitlines()]
    assert created
    assert {e["type"] for e in created} == {"WantCreated"}
    everything = [json.loads(line) for line in invoke("events", "--db", demo_db, "--json").stdout.splitlines()]
    one = invoke("events", "--db", demo_db, "--json", "--entity", DEMO_WEEKLY, "--limit", "2").stdout.splitlines()
    assert [json.loads(line)["entity_id"] for line in one] == [DEMO_WEEKLY] * 2

    at_10 = json.loads(invoke("replay", demo_db, "--until", "10", "--json").stdout)
    assert at_10["last_seq"] == 10
    assert sum(at_10["counts"]["want"].values()) < len({e["entity_id"] for e in created})
    t = everything[40]["at"]
    expected = max(e["seq"] for e in everything if e["at"] <= t)
    at_t = json.loads(invoke("replay", demo_db, "--until", repr(t), "--json").stdout)
    assert at_t["last_seq"] == expected
    full = invoke("replay", demo_db, "--verify")
    assert full.exit_code == 0
    assert "invariants I1, I2, I6, I7: ok" in full.stdout


@pytest.mark.parametrize("kind", ["want", "partition", "jobrun"])
def test_diagram_prints_the_generated_mermaid(kind: str) -> None:
    """``wantbuild diagram KIND`` prints exactly the machine's ``mermaid()``."""
    result = invoke("diagram", kind)
    machines: dict[str, Machine[Any]] = {"want": WANT, "partition": PARTITION, "jobrun": JOB_RUN}
    assert result.stdout == machines[kind].mermaid()


# -- replay --verify on a damaged history -----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["illegal-transition", "successful-without-live"])
def test_replay_verify_names_the_first_offending_seq(demo_db: Path, tmp_path: Path, bad: str) -> None:
    """An event written around the state machines makes ``replay --verify`` exit 1, naming its seq."""
    db = tmp_path / "bad.db"
    shutil.copy(demo_db, db)

    async def inject() -> int:
        async with EventLog.open(db) as log:
            if bad == "illegal-transition":  # a want that succeeds before it exists: I2
                rec = await log.append("want", "w-injected", 0, WantSucceeded())
            else:  # a want Successful while its partition is Missing: I6
                await log.append("want", "w-injected", 0, WantCreated(refs=("raw/1999-01-01",)))
                rec = await log.append("want", "w-injected", 1, WantSucceeded())
            return rec.seq

    seq = anyio.run(inject)
    result = invoke("replay", db, "--verify")
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert f"seq {seq}" in line
    assert ("I2" if bad == "illegal-transition" else "I6") in line


# -- a running runtime: --serve and the command inbox ----------------------------------------------------


def wait_for(predicate: Any, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def serving(graph_file: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    db = tmp_path / "served.db"
    proc = subprocess.Popen([*CLI, "run", str(graph_file), "--db", str(db), "--serve"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: EventLog.writer_active(db) or proc.poll() is not None, what="the runtime to start")
        assert proc.poll() is None, proc.communicate()[1]
        yield proc, db
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_run_serve_takes_wants_through_the_inbox(serving: tuple[subprocess.Popen[str], Path]) -> None:
    """Against ``run --serve``: want create/--wait, taint and cancel go through the inbox; SIGTERM stops it."""
    proc, db = serving
    created = invoke("want", "create", "daily/1", "--db", db, "--json")
    assert created.exit_code == 0, created.stderr
    first = json.loads(created.stdout)
    assert first["ok"]
    assert first["via"] == "inbox"
    assert first["want_id"]
    waited = invoke("want", "create", "daily/2", "raw/3", "--db", db, "--wait", "--json")
    assert waited.exit_code == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "Successful"
    status = json.loads(invoke("status", "--db", db, "--json").stdout)
    assert status["runtime_running"] is True
    wait_for(lambda: load(db).wants[first["want_id"]].terminal, what="the first want")
    tainted = invoke("taint", "raw/3", "--reason", "bad rows", "--db", db, "--json")
    assert json.loads(tainted.stdout)["partitions"] == ["raw/3"]
    wait_for(lambda: load(db).partition("raw/3").status == "Tainted", what="the taint")
    again = invoke("want", "cancel", first["want_id"], "--db", db)
    assert again.exit_code == 0, again.stderr
    assert "already Successful: nothing to cancel" in one_line(again.stdout)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Serving" in err
    assert "Traceback" not in err
    wants = load(db).wants.values()
    assert sorted(w.source for w in wants if not w.source.startswith("job_run:")) == ["cli", "cli"]


def test_a_change_without_runtime_is_queued_then_applied(graph_file: Path, tmp_path: Path) -> None:
    """With no runtime, want create queues the command; the next ``wantbuild run`` applies and builds it."""
    db = tmp_path / "queued.db"
    built = invoke("want", "create", "raw/1", "--graph", graph_file, "--db", db, "--json")
    assert built.exit_code == 0
    assert json.loads(built.stdout)["ok"]
    queued = invoke("want", "create", "daily/7", "--db", db, "--json")
    assert json.loads(queued.stdout)["via"] == "queued"
    assert "queued" in invoke("want", "create", "daily/8", "--db", db).stderr
    proc = wb("run", graph_file, "--db", db, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    world = load(db)
    made = {w.refs: w.status for w in world.wants.values() if w.source == "cli"}
    assert made == {("raw/1",): "Successful", ("daily/7",): "Successful", ("daily/8",): "Successful"}


def test_restart_after_sigkill_reports_lost_runs_and_finishes(graph_file: Path, tmp_path: Path) -> None:
    """SIGKILL ``wantbuild run`` mid-build; ``restart`` marks its runs Lost, re-queues them and completes."""
    db = tmp_path / "crash.db"
    proc = subprocess.Popen([*CLI, "run", str(graph_file), "--want", "raw/1", "--want", "raw/2", "--db", str(db)],
                            cwd=tmp_path, env={**os.environ, "WB_TEST_SLOW": "60"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        def running() -> bool:
            if proc.poll() is not None:
                return True
            if not db.exists():  # (a reader of a missing log leaks an aiosqlite thread: core bug)
                return False
            try:
                return any(r.status is JobRunStatus.RUNNING for r in load(db).runs.values())
            except LogNotFoundError:  # being created
                return False

        wait_for(running, what="a running job")
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        proc.kill()
        proc.communicate()
    result = wb("restart", db, graph_file, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ok"]
    assert out["recovery"]["lost_runs"]
    assert sorted(out["recovery"]["requeued_partitions"]) == ["raw/1", "raw/2"]
    text = wb("replay", db, "--verify", "--expect-terminal")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "Lost" in text.stdout


# -- bad input: one line, exit 2 for usage, 1 for failures ------------------------------------------------


def _newer_schema(tmp_path: Path) -> Path:
    db = tmp_path / "newer.db"

    async def create() -> None:
        async with EventLog.open(db):
            pass

    anyio.run(create)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    return db


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        pytest.param("weekly/2026\u201111\u201102", "U+2011 NON-BREAKING HYPHEN at index 11 (punctuation outside "
                     "ASCII that looks like '-') [rule: confusable]", id="look-alike-hyphen"),
        pytest.param("weekly/{week}", "'{' at index 7 (a placeholder's brace", id="unfilled-placeholder"),
        pytest.param("weekly/2026-11-0\uff12", "U+FF12 FULLWIDTH DIGIT TWO", id="fullwidth-digit"),
    ],
)
def test_refs_that_only_look_valid_are_refused(ref: str, needle: str, demo_db: Path) -> None:
    """A ref with a look-alike character or an unfilled placeholder is a usage error naming the character."""
    proc = wb("want", "create", ref, "--db", demo_db)
    assert proc.returncode == 2, proc.stderr
    assert needle in one_line(proc.stderr)


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        pytest.param("unknown-command", 2, "No such command", id="unknown-command"),
        pytest.param("unknown-option", 2, "No such option", id="unknown-option"),
        pytest.param("missing-log", 1, "no log at", id="missing-log"),
        pytest.param("corrupt-log", 1, "not a wantbuild event log", id="corrupt-log"),
        pytest.param("foreign-sqlite", 1, "not a wantbuild event log", id="foreign-sqlite"),
        pytest.param("newer-schema", 1, "newer wantbuild", id="newer-schema"),
        pytest.param("bad-graph", 1, "unknown field 'batchsize'", id="bad-graph"),
        pytest.param("missing-graph", 1, "no such graph file", id="missing-graph"),
        pytest.param("malformed-ref", 2, "raw//1", id="malformed-ref"),
        pytest.param("unknown-want", 1, "no want 'w-nope'", id="unknown-want"),
        pytest.param("bad-until", 2, "neither a seq", id="bad-until"),
        pytest.param("unknown-event-type", 2, "did you mean 'WantCreated'", id="unknown-event-type"),
    ],
)
def test_bad_input_is_one_line(case: str, code: int, needle: str, tmp_path: Path, demo_db: Path) -> None:
    """Each user error: one line on stderr naming the problem, exit 2 for usage, 1 for failures."""
    junk = tmp_path / "junk.db"
    args: list[str | Path]
    if case == "unknown-command":
        args = ["frobnicate"]
    elif case == "unknown-option":
        args = ["status", "--frobnicate"]
    elif case == "missing-log":
        args = ["status", "--db", tmp_path / "nothing.db"]
    elif case == "corrupt-log":
        junk.write_bytes(b"this is not sqlite at all\n" * 200)
        args = ["status", "--db", junk]
    elif case == "foreign-sqlite":
        with sqlite3.connect(junk) as con:
            con.execute("CREATE TABLE t (x)")
        con.close()
        args = ["want", "list", "--db", junk]
    elif case == "newer-schema":
        args = ["replay", _newer_schema(tmp_path)]
    elif case == "bad-graph":
        bad = tmp_path / "bad.toml"
        bad.write_text('[job.raw]\noutputs = "raw/{i}"\ncommand = ["true"]\nbatchsize = 3\n')
        args = ["run", bad, "--db", tmp_path / "x.db"]
    elif case == "missing-graph":
        args = ["run", tmp_path / "nope.toml", "--db", tmp_path / "x.db"]
    elif case == "malformed-ref":
        args = ["want", "create", "raw//1", "--db", demo_db]
    elif case == "unknown-want":
        args = ["want", "cancel", "w-nope", "--db", demo_db]
    elif case == "bad-until":
        args = ["replay", demo_db, "--until", "yesterday-ish"]
    else:
        args = ["events", "--db", demo_db, "--type", "WantCreatd"]
    result = invoke(*args)
    assert result.exit_code == code, result.output
    line = one_line(result.stderr)
    assert line.startswith("Error: ")
    assert needle in line
    assert result.stdout == ""
