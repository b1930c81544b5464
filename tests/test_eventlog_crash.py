"""Durability: SIGKILL a process in the middle of appending; every acknowledged append survives."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eventlog_helpers import HELPERS, ThingChanged, open_log

pytestmark = pytest.mark.timeout(60)


def _kill_while_appending(path: Path | str, tasks: int, acks_before_kill: int) -> list[tuple[int, str, str, int, int]]:
    """Start the crash writer, SIGKILL it once it has acknowledged enough appends; return every ack."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "crash_writer.py"), str(path), str(tasks)],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while len(lines) < acks_before_kill and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)  # mid-flight: appends are queued and a batch is being written
        rest = proc.stdout.read()  # acks printed before the kill are still in the pipe
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    *complete, _unterminated = ("".join(lines) + rest).split("\n")  # a line cut by the kill is no ack
    acks = []
    for line in complete:
        seq, kind, eid, entity_seq, n = line.split()
        acks.append((int(seq), kind, eid, int(entity_seq), int(n)))
    return acks


@pytest.mark.parametrize("tasks", [pytest.param(1, id="one-task"), pytest.param(40, id="forty-tasks")])
async def test_sigkill_loses_nothing_acknowledged(log_target: str, tasks: int) -> None:
    """After SIGKILL, every acknowledged append is in the log as acknowledged; no batch is half-written."""
    path = log_target
    acks = await asyncio.to_thread(_kill_while_appending, path, tasks, 400)
    assert len(acks) >= 400

    # PostgreSQL: the dead writer's session may take a moment to leave the server; then its lease is free.
    async with open_log(path, **({"lease_wait": 10} if path.startswith("postgresql") else {})) as log:
        report = await log.verify()
        assert report.ok, str(report)
        records = {r.seq: r async for r in log.read()}
        # Whole batches only: seqs are 1..last without a hole.
        assert list(range(1, log.last_seq + 1)) == sorted(records)
        for seq, kind, eid, entity_seq, n in acks:
            rec = records[seq]
            assert (kind, eid, entity_seq) == (rec.entity_kind, rec.entity_id, rec.entity_seq)
            assert ThingChanged(n=n - 1, note="x" * ((n - 1) % 50)) == rec.event
        assert max(seq for seq, *_ in acks) <= log.last_seq
        # The log goes on where the dead writer stopped.
        last = await log.entity_seq("thing", "thing-0")
        rec = await log.append("thing", "thing-0", last, ThingChanged(n=-1))
        assert (log.last_seq, last + 1) == (rec.seq, rec.entity_seq)
