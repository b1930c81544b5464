"""``wantbuild runs list|show|cancel``: job runs as objects of their own."""

from __future__ import annotations

from collections import deque
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from actors import EventFilter, JobRunState, JobRunStatus, World, rebuild
from eventlog import Record
from supervisor import UnknownEntity

from .._access import CliError, Db, reader, runtime_active, submit
from .._output import console, events_table, fmt_time, record_dict, runs_table, status_text
from .app import db_option, emit_json, json_option, run_async


@click.group("runs")
def runs() -> None:
    """List, show and cancel job runs."""


@runs.command("list", short_help="List job runs, filtered.")
@click.option("--status", "statuses", multiple=True, type=click.Choice([str(s) for s in JobRunStatus],
              case_sensitive=False), help="Only runs in this status (repeatable).")
@click.option("--job", "jobs", multiple=True, metavar="JOB", help="Only this job's runs (repeatable).")
@click.option("--active", is_flag=True, help="Only runs Queued or Running.")
@click.option("--last", type=click.IntRange(min=1), default=50, show_default=True, help="Only the last N runs.")
@db_option
@json_option
def runs_list(statuses: tuple[str, ...], jobs: tuple[str, ...], active: bool, last: int, db: Db,
              as_json: bool) -> None:
    """List job runs (oldest first), the last --last of those that match."""

    async def main() -> World:
        async with reader(db) as log:
            return await rebuild(log)

    world = run_async(main)
    wanted = {s.lower() for s in statuses}
    rows = [r for _, r in sorted(world.runs.items())
            if (not wanted or str(r.status).lower() in wanted) and (not jobs or r.job in jobs)
            and (not active or not r.terminal)][-last:]
    if as_json:
        emit_json(rows)
    elif rows:
        console().print(runs_table(rows))
    else:
        console(stderr=True).print(f"no job runs{' matching' if statuses or jobs or active else ''} in {db}")


def unknown_run(db: Db, run_id: str) -> UnknownEntity:
    return UnknownEntity(f"no job run {run_id!r} in {db}; list them with `wantbuild runs list --db {db}`")


def attempts_of(world: World, run: JobRunState) -> list[JobRunState]:
    """Every attempt of the run's retry chain (``retry_of`` links), first attempt first."""
    first = run
    while first.retry_of is not None and first.retry_of in world.runs:
        first = world.runs[first.retry_of]
    retries: dict[str, list[JobRunState]] = {}
    for r in world.runs.values():
        if r.retry_of is not None:
            retries.setdefault(r.retry_of, []).append(r)
    chain: list[JobRunState] = []
    todo = deque([first])
    while todo:
        cur = todo.popleft()
        chain.append(cur)
        todo.extend(sorted(retries.get(cur.job_run_id, ()), key=lambda r: r.job_run_id))
    return chain


def partition_rows(world: World, run: JobRunState) -> list[dict[str, Any]]:
    """What became of each partition the run planned: built, failed (and why), skipped, or not built."""
    gens = dict(zip(run.partitions, run.generations, strict=False))
    skipped = dict(run.skipped)
    rows = []
    for ref in dict.fromkeys((*run.planned, *run.partitions)):
        if ref in skipped:
            outcome = f"skipped: held by {skipped[ref]}"
        elif ref not in gens:
            outcome = "not leased"
        elif ref in run.failed:
            outcome = f"failed: {run.failed[ref]}"
        elif run.status is JobRunStatus.SUCCEEDED:
            outcome = "built"
        else:
            outcome = str(run.status)
        part = world.partition(ref)
        rows.append({"ref": ref, "generation": gens.get(ref), "outcome": outcome, "now": str(part.status),
                     "now_generation": part.generation})
    return rows


def read_rows(world: World, run: JobRunState) -> list[dict[str, Any]]:
    """What the run read: each input at the generation read, which partitions it fed, and how it is now."""
    rows = []
    for ref, gen in sorted(run.read.items()):
        part = world.partition(ref)
        rows.append({"ref": ref, "generation": gen, "into": list(run.into.get(ref, ())) or "all",
                     "now": str(part.status), "now_generation": part.generation})
    return rows


def tail(path: str | None, lines: int) -> list[str] | None:
    """The last ``lines`` lines of a log file; None if there is none."""
    if path is None or lines <= 0:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024 * max(1, lines // 100)))
            data = f.read()
    except OSError:
        return None
    return data.decode("utf-8", "replace").splitlines()[-lines:]


@runs.command("show", short_help="One run: partitions, reads, attempts, events, output.")
@click.argument("run_id", metavar="RUN")
@click.option("--tail", "tail_lines", type=click.IntRange(min=0), default=20, show_default=True,
              help="Lines of the end of its stdout and stderr logs to show (0: none).")
@click.option("--all", "show_all", is_flag=True, help="Every event and partition (default: the first 50).")
@db_option
@json_option
def runs_show(run_id: str, tail_lines: int, show_all: bool, db: Db, as_json: bool) -> None:
    """Show job run RUN: its state, what became of each partition, what it read (and whether that is still
    current), its attempts (the retry chain), its events and the end of its output."""

    async def main() -> tuple[World, list[Record]]:
        async with reader(db) as log:
            world = await rebuild(log)
            if run_id not in world.runs:
                raise unknown_run(db, run_id)
            flt = EventFilter(runs=[run_id])
            events = [rec async for rec in log.read(1) if flt(rec)]
            return world, events

    world, events = run_async(main)
    run = world.runs[run_id]
    parts = partition_rows(world, run)
    reads = read_rows(world, run)
    attempts = attempts_of(world, run)
    out_tail, err_tail = tail(run.stdout_path, tail_lines), tail(run.stderr_path, tail_lines)
    if as_json:
        emit_json({"run": run, "partitions": parts, "reads": reads, "attempts": attempts,
                   "events": [record_dict(r) for r in events], "stdout_tail": out_tail, "stderr_tail": err_tail})
        return
    limit = None if show_all else 50
    out = console()
    head = Text(f"run {run.job_run_id} ", style="bold")
    head.append_text(status_text(run.status))
    out.print(head)
    took = (f"{run.ended_at - run.started_at:.3f} s" if run.ended_at is not None and run.started_at is not None
            else "-")
    info = [("job", run.job), ("attempt", f"{run.attempt}/{run.max_attempts}"
                                            + (f" (retry of {run.retry_of})" if run.retry_of else "")),
            ("wants", ", ".join(run.wants) or "-"), ("policy", run.policy + (", refresh" if run.refresh else "")),
            ("created", fmt_time(run.created_at)), ("started", fmt_time(run.started_at)),
            ("ended", fmt_time(run.ended_at)), ("took", took), ("reason", run.reason or "-"),
            ("exit code", "-" if run.exit_code is None else str(run.exit_code)),
            ("logs", ", ".join(p for p in (run.stdout_path, run.stderr_path) if p) or "-")]
    for k, v in info:
        out.print(f"  {k:<10} {v}")
    out.print()
    out.print(Text(f"partitions: {len(parts)}", style="italic"))
    t = _table(("partition", "generation", "outcome", "now"))
    for row in parts[:limit]:
        t.add_row(row["ref"], str(row["generation"] or "-"), row["outcome"],
                  Text(f"{row['now']} @{row['now_generation']}", style="dim"))
    out.print(t)
    out.print()
    out.print(Text(f"read: {len(reads)}", style="italic"))
    if reads:
        t = _table(("input", "generation", "into", "now"))
        for row in reads[:limit]:
            stale = row["now"] != "Live" or row["now_generation"] != row["generation"]
            t.add_row(row["ref"], str(row["generation"]), row["into"] if isinstance(row["into"], str)
                      else ", ".join(row["into"]), Text(f"{row['now']} @{row['now_generation']}",
                                                       style="yellow" if stale else "dim"))
        out.print(t)
    if len(attempts) > 1:
        out.print()
        out.print(runs_table(attempts, title=f"attempts: {len(attempts)}"))
    out.print()
    out.print(Text(f"events: {len(events)}", style="italic"))
    out.print(events_table(events if limit is None else events[:limit], max_payload=None if show_all else 300))
    for name, lines in (("stdout", out_tail), ("stderr", err_tail)):
        if lines:
            out.print()
            out.print(Text(f"{name} (last {len(lines)} lines)", style="italic"))
            for line in lines:
                out.print(Text(line))
    if limit is not None and (len(events) > limit or len(parts) > limit or len(reads) > limit):
        out.print(Text(f"A large run: pass --all to list everything (`wantbuild runs show {run_id} --all`).",
                       style="dim"))


def _table(columns: tuple[str, ...]) -> Table:
    from rich import box

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


@runs.command("cancel", short_help="Cancel one run (its wants stay).")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", default="canceled from the CLI", show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the running runtime to answer.")
@db_option
@json_option
def runs_cancel(run_id: str, reason: str, timeout: float, db: Db, as_json: bool) -> int:
    """Cancel job run RUN through the running runtime: its process is killed and its partitions go back to
    Missing. The wants it served stay active, so their partitions are planned again in a new run; cancel the
    want (`wantbuild want cancel`) to stop building them."""

    async def main() -> int:
        async with reader(db) as log:
            world = await rebuild(log)
        run = world.runs.get(run_id)
        if run is None:
            raise unknown_run(db, run_id)
        if run.terminal:
            if as_json:
                emit_json({"ok": True, "job_run_id": run_id, "status": str(run.status), "already_terminal": True})
            else:
                console().print(f"run {run_id} is already {run.status}: nothing to cancel")
            return 0
        if not await runtime_active(db):
            raise CliError(f"no runtime is running on {db}: nothing executes run {run_id} (the next runtime to open "
                           f"the log marks it Lost and plans its partitions again)")
        sent = await submit(db, "cancel_run", {"job_run_id": run_id, "reason": reason, "timeout": timeout},
                            timeout + 5)
        command_id, answer = sent.command_id, sent.result
        if answer is None:
            raise CliError(f"submitted as command {command_id}, but the runtime on {db} did not answer within "
                           f"{timeout + 5:g} s")
        if not answer.get("ok"):
            raise CliError(str(answer.get("error", "the runtime refused the command")))
        if as_json:
            emit_json({**answer, "command_id": command_id})
        else:
            console().print(f"run {run_id} {answer.get('status')}; the wants it served plan its partitions again")
        return 0

    return run_async(main)
