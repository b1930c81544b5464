"""The CLI surfaces what the log knows about commands and damage: a rejected queued want is visible wherever one
looks, ``want create --wait`` never exits 0 after only queuing, and a damaged log is refused for writing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from wantbuild._cli import cli

pytestmark = pytest.mark.timeout(90)
CLI = [sys.executable, "-m", "wantbuild"]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def wb(*args: str | Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, "PYTHONPATH": str(cwd)})


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    """A graph with one no-op job, raw/{i}, in a module named for this test."""
    module = f"wbinbox_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text("async def raw(ctx):\n    pass\n")
    path = tmp_path / "graph.toml"
    path.write_text(f'[job.raw]\noutputs = "raw/{{i}}"\nfunction = "{module}:raw"\n')
    return path


@pytest.fixture
def db(tmp_path: Path, graph: Path) -> Path:
    """A log with one Successful want (raw/1), and no runtime running."""
    path = tmp_path / "x.db"
    proc = wb("want", "create", "raw/1", "--graph", graph, "--db", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return path


def test_a_rejected_queued_want_is_visible_wherever_one_looks(tmp_path: Path, graph: Path, db: Path) -> None:
    """A want queued with no runtime and later rejected: run exits 1 saying why, status lists it, want show of
    its command id says why (exit 1), want list lists it, and the next want create mentions it."""
    queued = invoke("want", "create", "nosuch/1", "--db", db, "--json")
    assert queued.exit_code == 0
    command_id = json.loads(queued.stdout)["command_id"]
    assert f"queued as command {command_id + 1};" in invoke("want", "create", "raw/9", "--db", db).stderr
    assert f"`wantbuild want show {command_id + 2} --db {db}` says how it went" in invoke(
        "want", "create", "raw/10", "--db", db).stderr
    ran = wb("run", graph, "--db", db, cwd=tmp_path)
    assert ran.returncode == 1
    assert f"Error: command {command_id} (want nosuch/1)" in ran.stderr
    assert "was rejected by the runtime: no job of graph 'graph' produces 'nosuch/1'" in ran.stderr

    status = json.loads(invoke("status", "--db", db, "--json").stdout)
    assert status["commands"]["counts"] == {"pending": 0, "ok": 2, "failed": 1}
    assert [command_id] == [c["id"] for c in status["commands"]["failed"]]
    assert "produces 'nosuch/1'" in status["commands"]["failed"][0]["error"]
    text = invoke("status", "--db", db).stdout
    assert "commands the runtime rejected (all)" in text
    assert "want nosuch/1" in text

    shown = invoke("want", "show", str(command_id), "--db", db)
    assert shown.exit_code == 1
    assert f"command {command_id} failed" in shown.stdout
    assert "was rejected by the runtime: no job of graph 'graph' produces 'nosuch/1'" in shown.stdout
    listed = invoke("want", "list", "--db", db).stdout
    assert "want commands without a want (queued, or rejected)" in listed
    assert "want nosuch/1" in listed
    assert "raw/9" in listed  # the other queued want was applied: a want, Successful
    nxt = invoke("want", "create", "raw/2", "--db", db)
    assert f"Note: command {command_id} (want nosuch/1)" in nxt.stderr
    again = invoke("want", "create", "raw/3", "--db", db)
    assert "Note:" not in again.stderr  # told once: to whoever submitted next


def test_a_queued_command_shows_as_pending(tmp_path: Path, db: Path) -> None:
    """Until a runtime takes it, a queued want is pending in status and in want show / want list."""
    command_id = json.loads(invoke("want", "create", "raw/5", "--db", db, "--json").stdout)["command_id"]
    status = json.loads(invoke("status", "--db", db, "--json").stdout)
    assert [command_id] == [c["id"] for c in status["commands"]["pending"]]
    assert "pending commands (applied when a runtime next opens the log)" in invoke("status", "--db", db).stdout
    shown = invoke("want", "show", str(command_id), "--db", db)
    assert shown.exit_code == 0
    assert "is queued: a runtime applies it when it next opens the log" in shown.stdout
    assert "pending" in invoke("want", "list", "--db", db, "--active").stdout


def test_want_create_wait_without_a_runtime_fails_when_none_comes(db: Path) -> None:
    """want create --wait with no runtime waits --timeout for one, then exits 1 saying the command stays queued."""
    started = time.monotonic()
    waited = invoke("want", "create", "raw/4", "--db", db, "--wait", "--timeout", "0.5")
    assert waited.exit_code == 1
    assert time.monotonic() - started >= 0.5
    assert "no runtime took it within 0.5 s; it stays queued" in waited.stderr
    status = json.loads(invoke("status", "--db", db, "--json").stdout)
    assert [c["payload"]["refs"] for c in status["commands"]["pending"]] == [["raw/4"]]


def test_want_create_wait_without_a_runtime_waits_for_one(tmp_path: Path, graph: Path, db: Path) -> None:
    """want create --wait with no runtime: a runtime that starts within --timeout takes it; exit 0 once the want
    is Successful."""
    waiter = subprocess.Popen([*CLI, "want", "create", "raw/6", "--db", str(db), "--wait", "--timeout", "30",
                               "--json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        deadline = time.monotonic() + 20
        while not json.loads(invoke("status", "--db", db, "--json").stdout)["commands"]["pending"]:
            assert time.monotonic() < deadline, "the waiter never queued its command"
            time.sleep(0.05)
        ran = wb("run", graph, "--db", db, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:  # pragma: no cover - only when an assertion failed above
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    assert json.loads(out)["status"] == "Successful"


@pytest.mark.parametrize("command", [pytest.param("run", id="run"), pytest.param("restart", id="restart")])
def test_a_damaged_log_is_refused_for_writing(tmp_path: Path, graph: Path, db: Path, command: str) -> None:
    """run and restart on a damaged log exit 1 with one line naming the damage and what to do; reading works."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)")
    conn.close()
    args: list[str | Path] = ["run", graph, "--db", db] if command == "run" else ["restart", db, graph]
    proc = wb(*args, cwd=tmp_path)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith(f"Error: {db}: the log is damaged, so nothing will be written to it: ")
    assert f"`wantbuild replay {db} --verify`" in line
    assert "restore it from a backup" in line
    assert invoke("status", "--db", db).exit_code == 0
    verify = wb("replay", db, "--verify", cwd=tmp_path)
    assert verify.returncode == 1
    assert "is damaged" in verify.stderr
