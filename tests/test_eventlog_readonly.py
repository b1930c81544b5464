"""A log in a read-only folder, or a read-only log file, is read by every reader (and every query command).

Permissions are enforced for real: the probes run in a subprocess, as root without the capabilities that bypass
file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER; tests run as root in CI), or as the user
running the tests otherwise. Each probe first checks that it really cannot write the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import need
from eventlog_helpers import HELPERS, ThingChanged, ThingCreated, open_log

import wantbuild
from supervisor import Graph, JobContext

pytestmark = pytest.mark.timeout(60)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS.parent), os.environ.get("PYTHONPATH", "")])}


def as_a_user_without_write_access() -> list[str]:
    """The prefix that runs a command with file permissions enforced."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        need("setpriv", "install util-linux (apt-get install util-linux) to run the read-only tests as root")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def probe(path: Path) -> dict[str, Any]:
    """Run the read-only probe on ``path`` without write access; its findings."""
    proc = subprocess.run([*as_a_user_without_write_access(), sys.executable, str(HELPERS / "read_only_probe.py"),
                           str(path)], env=ENV, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A folder that anyone may enter (tests may drop privileges); its permissions restored afterwards."""
    where = tmp_path / "logs"
    where.mkdir()
    tmp_path.chmod(0o755)
    yield where
    for p in (where, *where.iterdir()):
        p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)


async def small_log(path: Path) -> None:
    async with open_log(path) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        await log.append("thing", "a", 1, ThingChanged(n=1))
        await log.append("thing", "b", 0, ThingCreated(name="b"))


def read_only(*paths: Path) -> None:
    for p in paths:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_a_log_in_a_read_only_folder_is_read(folder: Path) -> None:
    """A cleanly closed log in a read-only folder: a reader reads and verifies it, commands and writers are
    refused with messages that say why."""
    path = folder / "log.db"
    anyio.run(small_log, path)
    assert sorted(p.name for p in folder.iterdir()) == ["log.db", "log.db.lock"]
    (folder / "log.db.lock").unlink()  # a copied log has none: a writer would have to create it
    read_only(folder)
    found = probe(path)
    assert found["can_write_folder"] is False
    assert (found["seqs"], found["verify_ok"], found["read_only"]) == ([1, 2, 3], True, True)
    assert found["submit"].startswith("ReadOnlyLogError: ")
    assert "the log's file or folder is read-only for this user" in found["submit"]
    assert "cannot open the log for writing: its folder is read-only for this user (creating the writer lock" in (
        found["writer"])


def test_a_read_only_log_file_is_read(folder: Path) -> None:
    """A read-only log file in a writable folder: read and verified; a command or a writer is refused."""
    path = folder / "log.db"
    anyio.run(small_log, path)
    read_only(path)
    found = probe(path)
    assert (found["seqs"], found["verify_ok"]) == ([1, 2, 3], True)
    assert found["submit"].startswith("ReadOnlyLogError: ")
    assert "cannot open the log for writing: the file or its folder is read-only" in found["writer"]


def crash_after_appending(path: Path) -> None:
    """A writer that appends three events and dies without closing: its -wal and -shm stay behind."""
    code = (
        "import asyncio, os\n"
        "from eventlog_helpers import ThingCreated, open_log\n"
        "async def main():\n"
        "    async with open_log(os.environ['LOG']) as log:\n"
        "        for i in range(3):\n"
        "            await log.append('thing', f't{i}', 0, ThingCreated(name='x'))\n"
        "        os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**ENV, "LOG": str(path)}, check=True, timeout=30)


def test_commits_in_a_crashed_writers_wal_are_read_in_a_read_only_folder(folder: Path) -> None:
    """Commits still in the -wal of a writer that died are read from a read-only folder (via its -shm)."""
    path = folder / "log.db"
    crash_after_appending(path)
    assert {"log.db-wal", "log.db-shm"} <= {p.name for p in folder.iterdir()}
    read_only(folder, *folder.iterdir())
    found = probe(path)
    assert found["can_write_folder"] is False
    assert found["seqs"] == [1, 2, 3]
    assert found["submit"].startswith("ReadOnlyLogError: ")


def test_a_wal_that_cannot_be_read_is_refused_not_ignored(folder: Path) -> None:
    """A -wal without its -shm in a read-only folder cannot be read: refused with the way out, never an
    older state shown as if it were the log."""
    path = folder / "log.db"
    crash_after_appending(path)
    (folder / "log.db-shm").unlink()
    read_only(folder)
    found = probe(path)
    assert "seqs" not in found
    assert found["reader"].startswith(f"EventLogError: {path}: cannot read the log's latest commits: they are in ")
    assert "copy the log together with its -wal file" in found["reader"]


async def build_a_small_log(path: Path) -> None:
    """A real wantbuild log: one want for two partitions, built."""
    g = Graph("ro")

    @g.job("daily", outputs="daily/{i}")
    async def daily(ctx: JobContext) -> None:
        pass

    async with wantbuild.open(path, g) as rt:
        st = await (await rt.want(["daily/1", "daily/2"])).done()
        assert str(st.status) == "Successful"


@pytest.mark.parametrize(
    "command",
    [pytest.param(["status", "--db", "{db}", "--json"], id="status"),
     pytest.param(["events", "--db", "{db}", "--json", "--kind", "want"], id="events"),
     pytest.param(["replay", "{db}", "--verify", "--json"], id="replay-verify")],
)
def test_query_commands_read_a_log_in_a_read_only_folder(folder: Path, command: list[str]) -> None:
    """status, events and replay --verify work on a log in a read-only folder, without write access."""
    db = folder / "wantbuild.db"
    anyio.run(build_a_small_log, db)
    read_only(folder, *folder.iterdir())
    proc = subprocess.run([*as_a_user_without_write_access(), sys.executable, "-m", "wantbuild",
                           *[a.format(db=db) for a in command]], cwd=folder.parent, env=ENV, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stderr.strip()) == (0, "")
    out = [json.loads(line) for line in proc.stdout.splitlines()] if command[0] == "events" else [
        json.loads(proc.stdout)]
    if command[0] == "events":
        assert {"WantCreated", "WantSucceeded"} <= {e["type"] for e in out}
    else:
        assert out[0]["last_seq"] > 0
    if command[0] == "replay":
        assert out[0]["verify"]["ok"] is True
