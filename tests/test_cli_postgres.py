"""The CLI and the runtime on a PostgreSQL log: ``--db postgresql://...`` on every command, as on SQLite; the
password never shown; a runtime that loses its lease stops."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import with_schema
from eventlog_helpers import ThingCreated, pg_connect, pg_schema
from eventlog_helpers import open_log as open_test_log
from runtime_graphs import chain_graph
from test_cli import CLI, graph_file, invoke, one_line, wait_for, wb

__all__ = ["graph_file"]  # the fixture, shared with the SQLite CLI tests

import wantbuild
from eventlog import LeaseLost, open_log

pytestmark = pytest.mark.timeout(90)
PASSWORD = "s3cret-pw"


def _running(url: str) -> bool:
    async def main() -> bool:
        try:
            async with open_log(url, writer=False) as log:
                return await log.lease() is not None
        except wantbuild.LogNotFoundError:
            return False

    return anyio.run(main)


@pytest.fixture
def pg_serving(graph_file: Path, tmp_path: Path, pg_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``wantbuild run GRAPH --db URL --serve`` in a subprocess, until the test ends."""
    proc = subprocess.Popen([*CLI, "run", str(graph_file), "--db", pg_url, "--serve"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or _running(pg_url), what="the runtime to start")
        assert proc.poll() is None, proc.communicate()[1]
        yield proc, pg_url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_every_command_works_on_a_served_postgres_log(pg_serving: tuple[subprocess.Popen[str], str],
                                                      tmp_path: Path) -> None:
    """Against ``run --serve`` on Postgres: want create (--wait) through the inbox, status, events --follow,
    explain, want list/show, taint; SIGTERM; then replay --verify, lineage, runs list/show, events --ref, taint list.
    No output shows the password."""
    proc, url = pg_serving
    follower = subprocess.Popen([*CLI, "events", "--db", url, "--follow", "--json", "--kind", "want",
                                 "--type", "WantSucceeded", "--limit", "2", "--from-seq", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        created = invoke("want", "create", "daily/1", "--db", url, "--json")
        assert created.exit_code == 0, created.stderr
        first = json.loads(created.stdout)
        assert first["via"] == "inbox"
        waited = invoke("want", "create", "daily/2", "raw/3", "--db", url, "--wait", "--json")
        assert waited.exit_code == 0, waited.stderr
        assert json.loads(waited.stdout)["status"] == "Successful"
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        followed = [json.loads(line) for line in out.splitlines()]
        assert [e["type"] for e in followed] == ["WantSucceeded", "WantSucceeded"]
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()

    status = invoke("status", "--db", url, "--json")
    doc = json.loads(status.stdout)
    assert doc["runtime_running"] is True
    assert PASSWORD not in doc["db"]
    assert ":***@" in doc["db"]
    table = invoke("status", "--db", url)
    assert "a runtime is running on it" in table.stdout
    assert PASSWORD not in table.stdout
    explained = json.loads(invoke("explain", "daily/2", "--db", url, "--json").stdout)
    assert explained["status"] == "Live"
    wants = json.loads(invoke("want", "list", "--db", url, "--json").stdout)
    assert sorted(w["refs"][0] for w in wants if w["source"] == "cli") == ["daily/1", "daily/2"]
    shown = json.loads(invoke("want", "show", first["want_id"], "--db", url, "--json").stdout)
    assert shown["want"]["refs"] == ["daily/1"]
    tainted = invoke("taint", "raw/3", "--reason", "bad rows", "--db", url, "--json")
    assert json.loads(tainted.stdout)["partitions"] == ["raw/3"]

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert PASSWORD not in err
    assert "Traceback" not in err
    verified = wb("replay", url, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "invariants I1, I2, I6, I7: ok" in verified.stdout
    assert PASSWORD not in verified.stdout + verified.stderr
    after = json.loads(invoke("status", "--db", url, "--json").stdout)
    assert after["runtime_running"] is False
    assert after["counts"]["partition"]["Tainted"] == 1
    # Lineage, runs, event filters and taints read a Postgres log as they read a SQLite one (issue 11).
    up = json.loads(invoke("lineage", "daily/2", "--db", url, "--json").stdout)
    (root,) = [n for n in up["nodes"] if n["ref"] == "daily/2"]
    assert root["status"] == "Live"
    never = invoke("lineage", "daily/99", "--db", url)
    assert never.exit_code == 1
    assert "daily/99 was never built" in never.stderr
    (run,) = json.loads(invoke("runs", "list", "--job", "daily", "--status", "succeeded", "--db", url,
                               "--json").stdout)[-1:]
    shown = json.loads(invoke("runs", "show", run["job_run_id"], "--db", url, "--json").stdout)
    assert shown["run"]["status"] == "Succeeded"
    lines = invoke("events", "--db", url, "--json", "--ref", "raw/3").stdout.splitlines()
    by_ref = [json.loads(line) for line in lines]
    assert {e["entity_id"] for e in by_ref if e["entity_kind"] == "partition"} == {"raw/3"}
    assert "PartitionTainted" in {e["type"] for e in by_ref}
    (t,) = json.loads(invoke("taint", "list", "--db", url, "--json").stdout)
    assert (t["refs"], t["tainted"]) == (["raw/3"], 1)


def test_a_queued_want_is_applied_by_the_next_run(graph_file: Path, tmp_path: Path, pg_url: str) -> None:
    """With no runtime, want create queues the command in the Postgres log; the next ``run`` builds it."""
    built = invoke("want", "create", "raw/1", "--graph", graph_file, "--db", pg_url, "--json")
    assert built.exit_code == 0, built.stderr
    queued = invoke("want", "create", "daily/7", "--db", pg_url, "--json")
    assert json.loads(queued.stdout)["via"] == "queued"
    proc = wb("run", graph_file, "--db", pg_url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wants = json.loads(invoke("want", "list", "--db", pg_url, "--json").stdout)
    assert sorted((w["refs"][0], w["status"]) for w in wants if w["source"] == "cli") == [
        ("daily/7", "Successful"), ("raw/1", "Successful")]


@pytest.mark.parametrize("case", ["unreachable", "wrong-password", "not-a-log", "newer-schema", "no-log"])
def test_bad_postgres_input_is_one_line_without_the_password(case: str, pg_url: str, pg_server: str) -> None:
    """Unreachable server, wrong password, a schema of something else, a newer log, no log: one line naming
    the URL with the password hidden, and the fix."""
    url = pg_url
    needle = {"unreachable": "cannot reach the PostgreSQL server", "wrong-password": "fix the password",
              "not-a-log": "not a wantbuild event log", "newer-schema": "upgrade wantbuild",
              "no-log": "no event log here"}[case]
    if case == "unreachable":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    elif case == "wrong-password":
        url = pg_url.replace(f":{PASSWORD}@", ":wrong-pw@")
    elif case in ("not-a-log", "newer-schema"):
        async def prepare() -> None:
            if case == "newer-schema":
                async with open_log(pg_url):
                    pass
            conn = await pg_connect(pg_url)
            try:
                s = pg_schema(pg_url)
                if case == "not-a-log":
                    await conn.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.orders (id int)")
                else:
                    await conn.execute(f"UPDATE {s}.meta SET value = '99' WHERE key = 'schema_version'")
            finally:
                await conn.close()

        anyio.run(prepare)
    result = invoke("status", "--db", url)
    assert result.exit_code == 1, result.output
    line = one_line(result.stderr)
    assert needle in line
    assert "postgres:***@" in line
    assert PASSWORD not in line
    assert "wrong-pw" not in line


async def test_a_runtime_that_loses_its_lease_stops(pg_url: str, tmp_path: Path) -> None:
    """Another writer takes the log (the lease lapsed): the runtime's next transition is refused, it stops its
    actors, and its ``async with`` raises LeaseLost; nothing it tried after that is in the log."""
    graph, _ = chain_graph()
    with pytest.raises(LeaseLost, match="lost its writer lease"):  # noqa: PT012 - the whole run is the subject
        async with wantbuild.open(pg_url, graph, log_dir=tmp_path / "logs") as rt:
            await (await rt.want("raw/1")).done(timeout=20)
            conn = await pg_connect(pg_url)
            try:  # the lease lapses at once (as after a stall), and another writer takes it
                await conn.execute(f"UPDATE {pg_schema(pg_url)}.writer_lease SET expires_at = clock_timestamp()")
            finally:
                await conn.close()
            async with open_log(pg_url, lease_wait=5) as thief:
                taken_at = thief.last_seq
                with anyio.fail_after(20):
                    await rt.want("raw/2")
                    await asyncio.sleep(30)  # cancelled by the runtime when it stops  # pragma: no cover
    assert rt.lease_lost is not None
    async with open_log(pg_url, writer=False) as reader:
        assert reader.last_seq == taken_at
        assert (await reader.verify()).ok


def test_open_log_on_a_url_with_schema(pg_server: str) -> None:
    """``?schema=`` picks the log: two schemas in one database are two independent logs."""

    async def main() -> tuple[int, int]:
        a, b = with_schema(pg_server, "t_cli_a"), with_schema(pg_server, "t_cli_b")
        async with open_test_log(a) as la, open_test_log(b) as lb:
            await la.append("thing", "x", 0, ThingCreated(name="a"))
            return la.last_seq, lb.last_seq

    try:
        assert anyio.run(main) == (1, 0)
    finally:
        from conftest import drop_schema

        drop_schema(pg_server, "t_cli_a")
        drop_schema(pg_server, "t_cli_b")


def test_a_url_on_the_command_line_never_shows_its_password() -> None:
    """--db keeps the real URL for connecting, and every way of showing it hides the password."""
    from wantbuild._access import DbParam, LogURL

    db = DbParam().convert(f"postgresql://u:{PASSWORD}@h:5432/d?schema=s", None, None)
    assert isinstance(db, LogURL)
    assert str.__str__(db).startswith(f"postgresql://u:{PASSWORD}@")  # what open_log gets
    shown = [str(db), f"{db}", f"{db:>10}", "%s" % db, repr(db), "{}".format(db)]  # noqa: UP031, UP032
    assert all(PASSWORD not in text and "u:***@h:5432" in text for text in shown), shown
    assert isinstance(DbParam().convert("run.db", None, None), Path)


async def test_the_web_view_reads_a_postgres_log(pg_url: str, tmp_path: Path) -> None:
    """The web view on a PostgreSQL log: it loads and follows it, says whether a runtime holds the lease, and
    shows the URL without its password."""
    from web_helpers import served, wait_ready

    from wantbuild._web._app import create_app

    graph, _ = chain_graph()
    async with wantbuild.open(pg_url, graph, log_dir=tmp_path / "logs") as rt:
        await (await rt.want("daily/1")).done(timeout=20)
        await rt.wait_quiescent()
        async with served(create_app(pg_url)) as client:
            health = await wait_ready(client)
            assert health["phase"] == "ready", health
            with anyio.fail_after(10):
                while True:
                    status = (await client.get("/api/status")).json()
                    if status["runtime_running"] and status["counts"] == rt.world.counts():
                        break
                    await anyio.sleep(0.1)
            assert PASSWORD not in (await client.get("/api/health")).text
