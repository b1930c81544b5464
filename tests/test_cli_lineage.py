"""``wantbuild lineage``, ``runs list|show|cancel``, ``events`` filters, ``status --stale``, ``explain``'s inputs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import Result
from lineage_graphs import lineage_graph
from test_cli import invoke, wait_for

from actors import rebuild
from eventlog import EventLog
from supervisor import open_runtime

CLI = [sys.executable, "-m", "wantbuild"]
WEEKLY = "weekly/2026-11-02"


def error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's log: a week of raw -> clean (flaky, retried) -> daily, and a weekly report, reads declared."""
    where = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([*CLI, "demo"], cwd=where, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return where / "wantbuild.db"


def test_lineage_tree_json_and_mermaid(demo: Path) -> None:
    """The weekly report's lineage: seven dailies, each built from its clean partition, each from its raw one."""
    tree = invoke("lineage", WEEKLY, "--db", demo)
    assert tree.exit_code == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(f"{WEEKLY} @")
    assert sum(1 for line in lines if line.startswith("  daily/")) == 7
    assert sum(1 for line in lines if line.startswith("      raw/")) == 7
    assert lines[-1] == "21 partition generation(s) upstream (what it was built from)"
    doc = json.loads(invoke("lineage", WEEKLY, "--db", demo, "--json").stdout)
    assert doc["direction"] == "up"
    assert len(doc["nodes"]) == 22
    assert len(doc["edges"]) == 21
    mermaid = invoke("lineage", WEEKLY, "--db", demo, "--mermaid").stdout
    assert mermaid.startswith("flowchart LR\n")
    assert mermaid.count(" --> ") == 21


def test_lineage_down_depth_and_until(demo: Path) -> None:
    """--down from a raw partition reaches the weekly report in 3 levels; --depth stops early; --until goes back."""
    down = json.loads(invoke("lineage", "raw/2026-11-04", "--down", "--db", demo, "--json").stdout)
    assert sorted(n["ref"] for n in down["nodes"]) == ["clean/2026-11-04", "daily/2026-11-04", "raw/2026-11-04",
                                                       WEEKLY]
    assert not down["truncated"]
    one = json.loads(invoke("lineage", "raw/2026-11-04", "--down", "--depth", "1", "--db", demo, "--json").stdout)
    assert [n["ref"] for n in one["nodes"]] == ["raw/2026-11-04", "clean/2026-11-04"]
    assert one["truncated"]
    events = [json.loads(line) for line in invoke("events", "--db", demo, "--json", "--entity", WEEKLY,
                                                  "--type", "PartitionBuilding").stdout.splitlines()]
    before = str(events[-1]["seq"] - 1)
    then = json.loads(invoke("lineage", "daily/2026-11-04", "--down", "--until", before, "--db", demo,
                             "--json").stdout)
    assert [n["ref"] for n in then["nodes"]] == ["daily/2026-11-04"]  # the report was not built yet


@pytest.mark.parametrize(("args", "code", "needle"), [
    pytest.param(["lineage", "daily/2026-12-25"], 1, "daily/2026-12-25 was never built", id="never-built"),
    pytest.param(["lineage", "daily//1"], 2, "daily//1", id="malformed"),
    pytest.param(["lineage", WEEKLY, "--generation", "9"], 1, "generation 9 of weekly/2026-11-02", id="generation"),
    pytest.param(["runs", "show", "r-99999999"], 1, "no job run 'r-99999999'", id="unknown-run"),
    pytest.param(["runs", "cancel", "r-99999999"], 1, "no job run 'r-99999999'", id="cancel-unknown"),
    pytest.param(["events", "--pattern", "daily/{date"], 2, "never closed", id="bad-pattern"),
])
def test_bad_input_is_one_line(demo: Path, args: list[str], code: int, needle: str) -> None:
    """A ref never built, a malformed one, an unknown run, a bad pattern: one line, the right exit code."""
    result = invoke(*args, "--db", demo)
    assert result.exit_code == code, result.output
    assert needle in error_line(result)


def test_explain_names_the_generations_a_partition_was_built_from(demo: Path) -> None:
    """explain of a Live partition says which input generations it was built from."""
    ex = json.loads(invoke("explain", "daily/2026-11-03", "--db", demo, "--json").stdout)
    assert any(d.startswith("built from clean/2026-11-03@") for d in ex["details"])


def test_runs_list_and_show(demo: Path) -> None:
    """runs list filters by job and status; runs show gives partitions, reads, the retry chain and events."""
    failed = json.loads(invoke("runs", "list", "--job", "clean", "--status", "failed", "--db", demo,
                               "--json").stdout)
    assert failed
    assert {r["job"] for r in failed} == {"clean"}
    first = failed[0]["job_run_id"]
    shown = json.loads(invoke("runs", "show", first, "--db", demo, "--json").stdout)
    assert shown["run"]["status"] == "Failed"
    assert [a["status"] for a in shown["attempts"]] == ["Failed", "Succeeded"]
    retry = shown["attempts"][1]["job_run_id"]
    again = json.loads(invoke("runs", "show", retry, "--db", demo, "--json").stdout)
    (part,) = again["partitions"]
    assert (part["outcome"], part["now"]) == ("built", "Live")
    (read,) = again["reads"]
    assert read["ref"].startswith("raw/")
    assert read["into"] == [part["ref"]]
    assert [e["type"] for e in again["events"]][:2] == ["JobRunQueued", "PartitionBuilding"]
    text = invoke("runs", "show", retry, "--db", demo).stdout
    assert "attempts: 2" in text
    assert "read: 1" in text


def test_events_filters(demo: Path) -> None:
    """--pattern with --type: the failed runs of clean partitions only; --ref: the partition and its runs."""
    lines = invoke("events", "--db", demo, "--json", "--pattern", "clean/*", "--type", "JobRunFailed").stdout
    failed = [json.loads(line) for line in lines.splitlines()]
    assert failed
    assert {e["type"] for e in failed} == {"JobRunFailed"}
    by_ref = [json.loads(line) for line in invoke("events", "--db", demo, "--json", "--ref",
                                                  "raw/2026-11-03").stdout.splitlines()]
    kinds = {e["entity_kind"] for e in by_ref}
    assert kinds == {"partition", "job_run", "want"}
    assert {e["entity_id"] for e in by_ref if e["entity_kind"] == "partition"} == {"raw/2026-11-03"}
    weekly = [json.loads(line) for line in invoke("events", "--db", demo, "--json", "--job", "weekly",
                                                  "--kind", "partition").stdout.splitlines()]
    assert {e["entity_id"] for e in weekly} == {WEEKLY}
    none = invoke("events", "--db", demo, "--run", "r-99999999")
    assert none.exit_code == 0
    assert "no matching events" in none.stderr


def test_status_stale(tmp_path: Path) -> None:
    """status --stale lists a Live partition whose input was rebuilt since, with both generations."""
    db = tmp_path / "stale.db"

    async def build() -> None:
        g, _ = lineage_graph()
        async with open_runtime(db, g) as rt:
            await (await rt.want("daily/1")).done(timeout=10)
            await rt.taint("raw/1", "bad rows", cascade=False)  # daily/1 stays Live: stale
            await (await rt.want("raw/1")).done(timeout=10)

    anyio.run(build)
    doc = json.loads(invoke("status", "--stale", "--db", db, "--json").stdout)
    assert doc["stale"] == [{"ref": "daily/1", "generation": 2, "built_by": doc["stale"][0]["built_by"],
                             "job": "daily", "newer": {"raw/1": {"read": 1, "now": 2}}}]
    assert "raw/1 @1 -> @2" in invoke("status", "--stale", "--db", db).stdout


HANG_ONCE = '''\
from pathlib import Path

import anyio

MARK = Path(__file__).parent / "hung-once"


async def slow(ctx):
    if not MARK.exists():
        MARK.write_text("hung")
        await anyio.sleep(600)
'''


@contextlib.contextmanager
def serve(tmp_path: Path, name: str, source: str, jobs: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``wantbuild run GRAPH --serve`` on function jobs (``jobs``: job name -> output pattern) defined in
    ``source``, until the block ends."""
    module = f"wb{name}_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(source)
    graph = tmp_path / "graph.toml"
    graph.write_text("\n".join(f'[job.{job}]\noutputs = "{outputs}"\nfunction = "{module}:{job}"\n'
                               for job, outputs in jobs.items()))
    db = tmp_path / f"{name}.db"
    proc = subprocess.Popen([*CLI, "run", str(graph), "--db", str(db), "--serve"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        wait_for(lambda: EventLog.writer_active(db) or proc.poll() is not None, what="the runtime to start")
        assert proc.poll() is None, proc.communicate()[1]
        yield proc, db
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``run --serve`` on slow/{i}, whose first run hangs."""
    with serve(tmp_path, "hang", HANG_ONCE, {"slow": "slow/{i}"}) as served:
        yield served


def load(db: Path) -> Any:
    async def main() -> Any:
        async with EventLog.open(db, writer=False) as log:
            return await rebuild(log)

    return anyio.run(main)


def test_runs_cancel_through_the_running_runtime(serving: tuple[subprocess.Popen[str], Path]) -> None:
    """runs cancel kills a hung run; its want stays active and a new run builds the partition."""
    proc, db = serving
    created = json.loads(invoke("want", "create", "slow/1", "--db", db, "--json").stdout)
    wait_for(lambda: any(r.status == "Running" for r in load(db).runs.values()))
    (run_id,) = [r.job_run_id for r in load(db).runs.values() if r.status == "Running"]
    canceled = invoke("runs", "cancel", run_id, "--reason", "stuck on a bad node", "--db", db, "--json")
    assert canceled.exit_code == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "Canceled"
    wait_for(lambda: load(db).wants[created["want_id"]].terminal)
    world = load(db)
    assert world.wants[created["want_id"]].status == "Successful"
    assert world.runs[run_id].reason == "stuck on a bad node"
    assert [r.status for _, r in sorted(world.runs.items())] == ["Canceled", "Succeeded"]
    again = invoke("runs", "cancel", run_id, "--db", db)
    assert "already Canceled: nothing to cancel" in again.stdout
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0


CHAIN = '''\
async def raw(ctx):
    return None


async def daily(ctx):
    ctx.read_many({f"raw/{p['i']}": ref for ref, p in zip(ctx.partitions, ctx.params)})
'''


@pytest.fixture
def chain_serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``run --serve`` on raw/{i} -> daily/{i} (daily reads raw), function jobs."""
    with serve(tmp_path, "chain", CHAIN, {"raw": "raw/{i}", "daily": "daily/{i}"}) as served:
        yield served


def test_taint_create_list_show_cancel_through_the_runtime(chain_serving: tuple[subprocess.Popen[str], Path]) -> None:
    """taint REF cascades to what was built from it and waits for it; list and show it; cancel restores it; the
    inbox command was completed with the taint's creation (exactly once)."""
    proc, db = chain_serving
    assert invoke("want", "create", "daily/1", "daily/2", "--db", db, "--wait").exit_code == 0
    made = invoke("taint", "raw/1", "--reason", "duplicated rows", "--db", db, "--json")
    assert made.exit_code == 0, made.stderr
    doc = json.loads(made.stdout)
    taint_id = doc["taint_id"]
    assert (doc["taint"]["status"], doc["taint"]["tainted"]) == ("Applied", 2)
    world = load(db)
    assert world.taints[taint_id].command_id == doc["command_id"]
    assert [str(world.partition(r).status) for r in ("raw/1", "daily/1", "daily/2")] == ["Tainted", "Tainted",
                                                                                         "Live"]
    listed = json.loads(invoke("taint", "list", "--db", db, "--json").stdout)
    assert [t["taint_id"] for t in listed] == [taint_id]
    shown = json.loads(invoke("taint", "show", taint_id, "--db", db, "--json").stdout)
    assert [(p["ref"], p["depth"], p["via"]) for p in shown["partitions"]] == [("raw/1", 0, None),
                                                                             ("daily/1", 1, "raw/1@1")]
    assert "partitions it tainted: 2, 2 still Tainted by it" in invoke("taint", "show", taint_id, "--db", db).stdout
    only = invoke("taint", "create", "raw/2", "--reason", "x", "--no-cascade", "--db", db, "--json")
    assert json.loads(only.stdout)["taint"]["tainted"] == 1
    canceled = invoke("taint", "cancel", taint_id, "--reason", "false alarm", "--db", db)
    assert canceled.exit_code == 0, canceled.stderr
    assert f"taint {taint_id} Canceled; 2 partition(s) restored to Live" in canceled.stdout
    assert [str(load(db).partition(r).status) for r in ("raw/1", "daily/1")] == ["Live", "Live"]
    again = invoke("taint", "cancel", taint_id, "--db", db)
    assert "already Canceled: nothing to cancel" in again.stdout
    not_live = invoke("taint", "daily/9", "--reason", "x", "--db", db)
    assert not_live.exit_code == 1
    assert "daily/9 is Missing" in error_line(not_live)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
