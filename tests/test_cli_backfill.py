"""The CLI for range wants: ranges, --from-file and stdin, bad input refused with nothing written, want show."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner, Result

from actors import PartitionSet, World, rebuild
from eventlog import EventLog
from wantbuild._cli import cli

JOBS = '''\
async def daily(ctx):
    return None
'''

GRAPH = '''\
[job.daily]
outputs = "daily/{{date}}"
function = "{module}:daily"
params = {{ date = "date" }}
batch = 10

[job.raw]
outputs = "raw/{{key}}"
function = "{module}:daily"
'''


def invoke(*args: str | Path, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=stdin, catch_exceptions=False)


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    module = f"wbdaily_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(JOBS)
    path = tmp_path / "graph.toml"
    path.write_text(GRAPH.format(module=module))
    return path


def load(db: Path) -> World:
    async def main() -> World:
        async with EventLog.open(db, writer=False) as log:
            return await rebuild(log)

    return anyio.run(main)


def test_range_and_file_want_built_from_the_cli(graph_file: Path, tmp_path: Path) -> None:
    """A range plus refs from stdin make one want; its set is stored, and want show summarises it."""
    db = tmp_path / "wb.db"
    res = invoke("want", "create", "daily/2026-01-01..2026-02-28", "--from-file", "-", "--graph", graph_file,
                 "--db", db, "--priority", "3", stdin="# extra\nraw/a\nraw/b\n\ndaily/2026-01-05\n")
    assert res.exit_code == 0, res.output
    world = load(db)
    [want] = [w for w in world.wants.values() if w.source == "cli"]
    assert isinstance(want.refs, PartitionSet)
    assert (len(want.refs), want.priority, str(want.status)) == (59 + 2, 3, "Successful")
    assert "raw/a" in want.refs
    res = invoke("want", "show", want.want_id, "--db", db)
    assert res.exit_code == 0
    assert "daily/2026-01-01..2026-02-28" in res.output
    assert "partitions: 61" in res.output
    data = json.loads(invoke("want", "show", want.want_id, "--db", db, "--json").output)
    assert data["counts"]["partitions"] == {"Live": 61}
    assert data["want"]["refs"]["ranges"][0]["lo"] == "2026-01-01"


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param("daily/2026-01-01..12", "write e.g. daily/2026-01-01..2026-01-12", id="crosses-type"),
    pytest.param("daily/2026-03-01..2026-01-01", "is reversed", id="reversed"),
    pytest.param("raw/a..z", "which has no type", id="untyped"),
])
def test_bad_range_is_refused_and_nothing_written(graph_file: Path, tmp_path: Path, spec: str, expected: str) -> None:
    """A bad range exits non-zero with the fix and leaves no log behind."""
    db = tmp_path / "wb.db"
    res = invoke("want", "create", spec, "--graph", graph_file, "--db", db)
    assert res.exit_code != 0
    assert expected in res.output
    assert "Traceback" not in res.output
    assert not db.exists()


def test_from_file_names_the_bad_line(graph_file: Path, tmp_path: Path) -> None:
    """A refs file with an invalid ref names the file and the line."""
    refs = tmp_path / "refs.txt"
    refs.write_text("raw/a\nraw//b\n")
    res = invoke("want", "create", "--from-file", refs, "--graph", graph_file, "--db", tmp_path / "wb.db")
    assert res.exit_code != 0
    assert "line 2" in res.output
    assert not (tmp_path / "wb.db").exists()


def test_nothing_to_want_is_a_usage_error(tmp_path: Path) -> None:
    """want create with neither refs nor --from-file says what to give."""
    res = invoke("want", "create", "--db", tmp_path / "wb.db")
    assert res.exit_code == 2
    assert "--from-file" in res.output


def test_schedule_commands(graph_file: Path, tmp_path: Path) -> None:
    """schedule add (checked against the graph), list, pause, resume and rm; bad input is refused, nothing written."""
    db = tmp_path / "wb.db"
    bad = invoke("schedule", "add", "n", "--cron", "0 0 31 2 *", "--want", "daily/{date}", "--graph", graph_file,
                 "--db", db)
    assert bad.exit_code == 1
    assert "never fires" in bad.output
    assert not db.exists()
    bad = invoke("schedule", "add", "n", "--cron", "0 2 * * *", "--want", "daily/{date:yesterday}",
                 "--timezone", "Mars/Olympus", "--graph", graph_file, "--db", db)
    assert "unknown timezone 'Mars/Olympus'" in bad.output
    ok = invoke("schedule", "add", "nightly", "--cron", "0 2 * * *", "--want", "daily/{date:yesterday}",
                "--catch-up", "latest", "--graph", graph_file, "--db", db)
    assert ok.exit_code == 0, ok.output
    listed = json.loads(invoke("schedule", "list", "--db", db, "--json").output)
    assert [(s["name"], s["status"], s["spec"]["catch_up"]) for s in listed] == [("nightly", "Active", "latest")]
    assert listed[0]["next_tick"] is not None
    for command, status in (("pause", "Paused"), ("resume", "Active"), ("rm", "Deleted")):
        res = invoke("schedule", command, "nightly", "--graph", graph_file, "--db", db)
        assert res.exit_code == 0, res.output
        assert load(db).schedules["nightly"].status == status
    assert invoke("schedule", "rm", "nope", "--db", db).exit_code == 2


def test_ranges_and_schedules_through_a_running_runtime(graph_file: Path, tmp_path: Path) -> None:
    """Against ``run --serve``: a range want goes through the inbox and is read against the runtime's graph; a bad
    range is rejected with the fix and creates no want; a schedule is added, paused and removed the same way."""
    import subprocess
    import sys
    import time

    db = tmp_path / "served.db"
    proc = subprocess.Popen([sys.executable, "-m", "wantbuild", "run", str(graph_file), "--db", str(db), "--serve"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not EventLog.writer_active(db) and proc.poll() is None:
            assert time.monotonic() < deadline, "the runtime did not start"
            time.sleep(0.05)
        waited = invoke("want", "create", "daily/2026-03-01..2026-03-31", "--db", db, "--wait", "--json")
        assert waited.exit_code == 0, waited.output
        assert json.loads(waited.output)["status"] == "Successful"
        bad = invoke("want", "create", "daily/2026-03-01..31", "--db", db)
        assert bad.exit_code == 1
        assert "write e.g. daily/2026-03-01..2026-03-31" in bad.output
        for args in (("add", "nightly", "--cron", "0 2 * * *", "--want", "daily/{date:yesterday}"),
                     ("pause", "nightly"), ("rm", "nightly")):
            res = invoke("schedule", *args, "--db", db)
            assert res.exit_code == 0, res.output
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    world = load(db)
    assert [len(w.refs) for w in world.wants.values()] == [31]
    assert str(world.schedules["nightly"].status) == "Deleted"
