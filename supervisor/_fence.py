"""Fencing the jobs of a runtime that died: find the processes it started and stop them before anything is leased.

A command job runs in a session of its own (its pid is its process group's and session's id), with
``WANTBUILD_JOB_RUN_ID`` in its environment, and the kernel kills it when the runtime dies (``PR_SET_PDEATHSIG``,
see ``_execution._with_death_signal``). What can survive the runtime is what the job started itself
(grandchildren keep the group and the environment) or, without ``setpriv``, the job itself. The handle recorded
in ``JobRunAttached`` names the group, the leader's start time (clock ticks since boot), the boot and the host.

A process is killed only if it is provably the job's: it is on this host and this boot, in the recorded process
group, started no earlier than the job, and either carries the run's id in its environment or is the leader with
exactly the recorded start time. A reused pid is never killed. Every job also carries ``WANTBUILD_LOG`` (the log
it was started for) in its environment, so a run whose ``JobRunAttached`` never committed (the runtime died
right after the fork) is found too: by the run id and the log in the environment, wherever its group is. What
cannot be reached (another host) is reported: the fencing token (``JobContext.fence_token``) protects the output
then.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import anyio

from eventlog import get_logger

log = get_logger("wantbuild.execution")

EXECUTOR = "local"


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(pgrp, session, start_ticks)`` of a live (not zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[2]), int(fields[3]), int(fields[19])


def process_handle(pid: int) -> dict[str, str | int | float]:
    """What identifies the job started as ``pid`` (a session and group leader) for :func:`fence_local`."""
    st = _stat(pid)
    return {"pid": pid, "pgid": pid, "start_ticks": st[2] if st is not None else 0, "boot_id": boot_id(),
            "host": socket.gethostname()}


def _has_run_id(pid: int, run_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    return f"WANTBUILD_JOB_RUN_ID={run_id}".encode() in env.split(b"\0")


def job_processes(run_id: str, handle: dict[str, Any]) -> list[int]:
    """The live processes on this machine that are provably the job's (see the module docstring)."""
    try:
        pgid = int(handle["pgid"])
        start = int(handle.get("start_ticks", 0))
    except (KeyError, TypeError, ValueError):
        return []
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        st = _stat(pid)
        if st is None or st[0] != pgid or st[2] < start:
            continue
        if _has_run_id(pid, run_id) or (pid == pgid and st[2] == start and start > 0):
            found.append(pid)
    return found


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def processes_of_log(log_id: str, run_ids: set[str]) -> dict[str, list[int]]:
    """The live processes on this machine started for ``log_id`` by one of ``run_ids``, per run."""
    found: dict[str, list[int]] = {}
    if not log_id or not run_ids:
        return found
    mark = f"WANTBUILD_LOG={log_id}".encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        env = _environ(pid)
        if mark not in env or _stat(pid) is None:
            continue
        for var in env:
            if var.startswith(b"WANTBUILD_JOB_RUN_ID="):
                rid = var.split(b"=", 1)[1].decode(errors="replace")
                if rid in run_ids:
                    found.setdefault(rid, []).append(pid)
    return found


async def fence_local(runs: Sequence[Any], grace: float = 2.0, log_id: str = "") -> list[str]:
    """Stop what the local runs in ``runs`` (JobRunStates of a dead runtime) left running; say what was done."""
    lines: list[str] = []
    here, boot = socket.gethostname(), boot_id()
    victims: dict[str, list[int]] = {}
    for rid, pids in processes_of_log(log_id, {r.job_run_id for r in runs}).items():
        victims[rid] = pids
    for run in runs:
        handle = run.handle
        if run.executor != EXECUTOR or not handle:
            continue
        rid = run.job_run_id
        pid = handle.get("pid")
        if handle.get("host") != here:
            lines.append(f"{rid}: its process {pid} ran on {handle.get('host')!r}, which this runtime cannot reach; "
                         f"its fencing token keeps a late output from replacing a newer one")
            continue
        if handle.get("boot_id") != boot:
            lines.append(f"{rid}: its process {pid} ran before this machine restarted: nothing left of it")
            continue
        pids = job_processes(rid, handle)
        if pids:
            victims[rid] = sorted({*victims.get(rid, ()), *pids})
    if not victims:
        return lines
    for pids in victims.values():
        _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for pids in victims.values() for p in pids):  # noqa: ASYNC110
        await anyio.sleep(0.02)  # nobody but the parent hears of an exit: poll
    for rid, pids in victims.items():
        stubborn = [p for p in pids if _alive(p)]
        if stubborn:
            _signal(stubborn, signal.SIGKILL)
            lines.append(f"{rid}: killed {len(pids)} surviving job process(es) {pids} "
                         f"({len(stubborn)} needed SIGKILL after {grace:g} s)")
        else:
            lines.append(f"{rid}: stopped {len(pids)} surviving job process(es) {pids} with SIGTERM")
    for line in lines:
        log.warning("fenced a job of the previous runtime", detail=line)
    return lines


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
            if sig == signal.SIGTERM:
                os.kill(pid, signal.SIGCONT)  # a stopped process must see its SIGTERM
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    return _stat(pid) is not None
