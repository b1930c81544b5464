"""Queries: ``status``, ``explain``, ``events``, ``replay``, ``diagram``. They read the log directly (read-only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from actors import (
    JOB_RUN,
    KINDS,
    PARTITION,
    SCHEDULE,
    TAINT,
    WANT,
    EventFilter,
    InvalidRef,
    Machine,
    check_log,
    rebuild,
    stale,
    validate_refs,
    verify_snapshots,
)
from eventlog import REGISTRY, Command, CommandState, Record
from supervisor import explain as explain_ref
from supervisor import load_graph, valid_choices

from .._access import CliError, Db, DbParam, LogURL, graph_logs, load_world, parse_until, reader, runtime_active
from .._output import (
    command_dict,
    commands_table,
    console,
    dumps,
    event_line,
    explanation_text,
    fmt_time,
    print_summary,
    stale_table,
    world_summary,
)
from .._signals import Interrupts
from .app import db_option, emit_json, error, graph_option, json_option, run_async

DIAGRAMS: dict[str, Machine[Any]] = {"want": WANT, "partition": PARTITION, "jobrun": JOB_RUN, "schedule": SCHEDULE,
                                     "taint": TAINT}


ALL_GRAPHS_HELP = "Every graph's log in the PostgreSQL database of --db (each graph is a schema), one after another."


@click.command(short_help="Entities per status, active wants, runs in flight.")
@click.option("--stale", "only_stale", is_flag=True,
              help="List the stale partitions instead: Live, but an input has been rebuilt since.")
@db_option
@click.option("--all-graphs", is_flag=True, help=ALL_GRAPHS_HELP)
@json_option
def status(only_stale: bool, db: Db, all_graphs: bool, as_json: bool) -> None:
    """What the log holds now: entities per status, active wants, runs in flight, failures, and the inbox's
    commands that have not taken effect: pending ones, and the last ones the runtime rejected. With --stale, the
    Live partitions whose inputs have since been rebuilt (a newer generation is Live), and which input."""
    if only_stale:
        found = stale(run_async(lambda: load_world(db)))
        if as_json:
            emit_json({"db": str(db), "stale": [s.to_dict() for s in found]})
        elif found:
            console().print(stale_table(found))
        else:
            console(stderr=True).print(f"no stale partitions in {db}")
        return
    if not all_graphs:
        _status(db, as_json)
        return
    logs = every_graph(db, "status")
    if as_json:
        emit_json([_status_dict(log) for log in logs])
        return
    for i, log in enumerate(logs):
        if i:
            console().print()
        _status(log, False)


def every_graph(db: Db, command: str) -> list[LogURL]:
    """``--all-graphs``: the log of every graph in the PostgreSQL database of ``db`` (a CliError for a SQLite file,
    or a database without a wantbuild log)."""
    if not isinstance(db, LogURL):
        raise CliError(f"--all-graphs lists the logs (schemas) of a PostgreSQL database, and {db} is a SQLite file, "
                       f"which holds one graph; run `wantbuild {command} --db FILE` for each file")
    logs = run_async(lambda: graph_logs(db))
    if not logs:
        raise CliError(f"no wantbuild log in the database of {db}; a runtime creates one when it first runs "
                       "(`wantbuild run GRAPH.toml --db URL`)")
    return logs


def _status_dict(db: Db) -> dict[str, Any]:
    world, pending, failed, counts = run_async(lambda: _status_read(db))
    return _as_dict(db, world, pending, failed, counts, run_async(lambda: runtime_active(db)))


def _as_dict(db: Db, world: Any, pending: list[Command], failed: list[Command], counts: dict[CommandState, int],
             running: bool) -> dict[str, Any]:
    return {"db": str(db), "runtime_running": running, **world_summary(world),
            "commands": {"counts": counts, "pending": [command_dict(c) for c in pending],
                         "failed": [command_dict(c) for c in failed]}}


async def _status_read(db: Db) -> tuple[Any, list[Command], list[Command], dict[CommandState, int]]:
    async with reader(db) as log:
        world = await rebuild(log)
        pending = await log.commands("pending")
        failed = await log.commands("failed", newest_first=True, limit=FAILED_SHOWN)
        return world, pending, failed[::-1], await log.command_counts()


def _status(db: Db, as_json: bool) -> None:
    world, pending, failed, counts = run_async(lambda: _status_read(db))
    summary = world_summary(world)
    running = run_async(lambda: runtime_active(db))
    if as_json:
        emit_json(_as_dict(db, world, pending, failed, counts, running))
        return
    out = console()
    state = "a runtime is running on it" if running else "no runtime is running on it"
    print_summary(out, world, summary, heading=f"{db}: {summary['last_seq']} events, {state}")
    if pending:
        out.print()
        where = "the running runtime takes them" if running else "applied when a runtime next opens the log"
        out.print(commands_table(pending, title=f"pending commands ({where})"))
    if failed:
        out.print()
        shown = f"last {len(failed)} of {counts['failed']}" if counts["failed"] > len(failed) else "all"
        out.print(commands_table(failed, title=f"commands the runtime rejected ({shown})"))


FAILED_SHOWN = 10
"""How many rejected commands ``status`` lists (the most recent; ``--json`` has the count of all)."""


@click.command(short_help="Why a partition is not Live yet, as a chain.")
@click.argument("ref")
@graph_option("The graph file, to name the job that builds REF and its concurrency (optional).")
@db_option
@click.option("--all-graphs", is_flag=True, help="Explain REF in every graph's log in the PostgreSQL database of "
              "--db (each graph is a schema), one after another.")
@json_option
def explain(ref: str, graph_path: Path | None, db: Db, all_graphs: bool, as_json: bool) -> None:
    """Why partition REF is not Live yet (or how it became Live), as a chain through its upstream partitions."""
    try:
        ref = validate_refs([ref])[0]
    except InvalidRef as e:
        raise click.BadParameter(str(e), param_hint="REF") from None
    graph = load_graph(graph_path) if graph_path is not None else None

    def one(log: Db) -> Any:
        async def main() -> Any:
            world = await load_world(log)
            return await explain_ref(world, graph, ref)

        return run_async(main)

    if not all_graphs:
        ex = one(db)
        if as_json:
            emit_json(ex.to_dict())
        else:
            console().print(explanation_text(ex), end="")
        return
    found = [(log, one(log)) for log in every_graph(db, "explain")]
    if as_json:
        emit_json([{"db": str(log), **ex.to_dict()} for log, ex in found])
        return
    for i, (log, ex) in enumerate(found):
        if i:
            console().print()
        console().print(Text(str(log), style="bold"))
        console().print(explanation_text(ex), end="")


def _type_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    known = sorted({cls.event_name for cls in REGISTRY.all()})
    for t in value:
        if t not in known:
            raise click.BadParameter(f"unknown event type {t!r}; {valid_choices(t, known, label='known')}")
    return tuple(value)


@click.command(short_help="Committed events, filtered; --follow for new ones.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they commit (Ctrl-C stops).")
@click.option("--entity", "entity_id", metavar="ID", help="Only this entity's events (a want id, a ref, a run id).")
@click.option("--ref", "refs", multiple=True, metavar="REF", help="Events about this partition: its own, its "
              "runs', and those of the wants and taints naming it (repeatable).")
@click.option("--pattern", "patterns", multiple=True, metavar="PATTERN",
              help="Like --ref for every partition matching a glob ('daily/2026-11-*') or a job pattern "
                   "('daily/{date}') (repeatable).")
@click.option("--job", "jobs", multiple=True, metavar="JOB", help="Events of this job's runs and partitions "
              "(repeatable).")
@click.option("--run", "runs", multiple=True, metavar="RUN", help="Events of this run and of the partitions it "
              "leased (repeatable).")
@click.option("--want", "wants", multiple=True, metavar="WANT", help="Events of this want and of the runs serving "
              "it (repeatable).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only this entity kind (repeatable).")
@click.option("--type", "types", multiple=True, callback=_type_callback, metavar="TYPE",
              help="Only this event type, e.g. WantCreated (repeatable).")
@click.option("--from-seq", type=click.IntRange(min=1), help="Start at this seq (default: the first event; with "
              "--follow: the next new one).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many events.")
@db_option
@json_option
def events(follow: bool, entity_id: str | None, refs: tuple[str, ...], patterns: tuple[str, ...],
           jobs: tuple[str, ...], runs: tuple[str, ...], wants: tuple[str, ...], kinds: tuple[str, ...],
           types: tuple[str, ...], from_seq: int | None, limit: int | None, db: Db, as_json: bool) -> int:
    """Print committed events, filtered; --json prints one JSON object per line.

    Filters of different options must all hold; the values of one option are alternatives. --ref and --pattern
    take in the runs, wants and taints that name a matching partition: `--pattern 'daily/*' --type
    JobRunFailed` lists the failed runs of daily partitions.
    """
    out = console()
    try:
        flt = EventFilter(refs=refs, patterns=patterns, jobs=jobs, runs=runs, wants=wants)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--pattern") from None
    # With a filter that learns from earlier records (which run builds what), read them all and filter here.
    scan_from = 1 if flt.needs_context else None

    async def read_all() -> list[Record]:
        got: list[Record] = []
        async with reader(db) as log:
            async for rec in log.read(scan_from or from_seq or 1, kinds=None if scan_from else kinds or None,
                                      entity_id=None if scan_from else entity_id,
                                      types=None if scan_from else types or None):
                if not flt(rec) or (scan_from and not _plain_match(rec, from_seq, kinds, entity_id, types)):
                    continue
                got.append(rec)
                if limit is not None and len(got) >= limit:
                    break
        return got

    async def follow_live() -> None:
        n = 0
        async with reader(db) as log:
            start = from_seq if from_seq is not None else log.last_seq + 1
            if flt.needs_context and start > 1:
                flt.seed(await rebuild(log, until_seq=start - 1))
            async for rec in log.follow(start, kinds=kinds or None, entity_id=entity_id, types=types or None):
                if not flt(rec):
                    continue
                if as_json:
                    click.echo(dumps(rec, indent=False))
                else:
                    out.print(event_line(rec))
                n += 1
                if limit is not None and n >= limit:
                    return

    if follow:
        with Interrupts(announce=False) as interrupts:

            async def follow_until_stopped() -> None:
                with interrupts.stoppable():
                    await follow_live()

            run_async(follow_until_stopped)
        return 0
    records = run_async(read_all)
    for rec in records:
        if as_json:
            click.echo(dumps(rec, indent=False))
        else:
            out.print(event_line(rec))
    if not records:
        console(stderr=True).print(f"no matching events in {db}")
    return 0


def _plain_match(rec: Record, from_seq: int | None, kinds: Sequence[str], entity_id: str | None,
                 types: Sequence[str]) -> bool:
    """The filters the log applies itself, for records read unfiltered (so a context filter saw them all)."""
    return ((from_seq is None or rec.seq >= from_seq) and (not kinds or rec.entity_kind in kinds)
            and (entity_id is None or rec.entity_id == entity_id) and (not types or rec.type in types))


@click.command(short_help="The state at any point; --verify checks invariants.")
@click.argument("db", type=DbParam())
@click.option("--until", metavar="SEQ|TIME",
              help="Stop at this seq (an integer) or time (seconds like 1762070400.5, or ISO 2026-11-02T10:15).")
@click.option("--verify", is_flag=True, help="Check the log's structure and invariants I1, I2, I6, I7 (and I5 with "
              "--expect-terminal); exit 1 naming the first offending seq.")
@click.option("--expect-terminal", is_flag=True, help="With --verify: every want must be terminal (I5).")
@json_option
def replay(db: Db, until: str | None, verify: bool, expect_terminal: bool, as_json: bool) -> int:
    """Rebuild the state recorded in DB (at any point with --until) and print a summary."""
    until_seq, until_time = parse_until(until) if until is not None else (None, None)

    async def main() -> tuple[Any, list[Any], list[str], list[str]]:
        async with reader(db) as log:
            if not verify:
                return await rebuild(log, until_seq=until_seq, until_time=until_time), [], [], []
            report = await log.verify()
            problems = [str(p) for p in report.problems]
            seq = until_seq
            if until_time is not None:
                seq = (await rebuild(log, until_time=until_time)).last_seq
            world, violations = await check_log(log, expect_all_terminal=expect_terminal, until_seq=seq)
            world.restored = (await rebuild(log, until_seq=world.last_seq)).restored
            return world, violations, problems, await verify_snapshots(log, until_seq=seq)

    world, violations, problems, snap_problems = run_async(main)
    summary = world_summary(world)
    at = f"seq {world.last_seq}" + (f" ({fmt_time(world.last_at)})" if world.last_seq else "")
    if as_json:
        doc: dict[str, Any] = {"db": str(db), "until": until, **summary}
        if verify:
            doc["verify"] = {"ok": not violations and not problems and not snap_problems, "problems": problems,
                             "snapshots": snap_problems,
                             "violations": [{"invariant": v.invariant, "seq": v.seq, "message": v.message,
                                             "entities": list(v.entities)} for v in violations]}
        emit_json(doc)
    else:
        out = console()
        print_summary(out, world, summary, heading=f"{db} replayed up to {at}")
        if verify:
            out.print()
            if problems:
                out.print(Text(f"log structure: {len(problems)} problem(s)", style="bold red"))
                for p in problems:
                    out.print(f"  {p}")
            else:
                out.print(Text("log structure: ok", style="green"))
            if violations:
                out.print(Text(f"invariants: {len(violations)} violation(s)", style="bold red"))
                for v in violations:
                    out.print(f"  {v}")
            else:
                checked = "I1, I2, I5, I6, I7" if expect_terminal else "I1, I2, I6, I7"
                out.print(Text(f"invariants {checked}: ok", style="green"))
            if snap_problems:
                out.print(Text(f"snapshots: {len(snap_problems)} problem(s)", style="bold red"))
                for p in snap_problems:
                    out.print(f"  {p}")
            else:
                out.print(Text("snapshots: each equals a replay up to its seq", style="green"))
    if violations:
        first = min(violations, key=lambda v: (v.seq is None, v.seq or 0))
        where = f"seq {first.seq}" if first.seq is not None else "the end of the log"
        error(f"invariant {first.invariant} violated at {where}: {first.message} "
               f"(see `wantbuild events --db {db} --from-seq {first.seq or 1}`)")
        return 1
    if problems:
        error(f"{db} is damaged: {problems[0]}")
        return 1
    if snap_problems:
        error(f"{db}: {snap_problems[0]} (restart skips an unusable snapshot; delete a wrong one with "
              f"`wantbuild snapshot --db {db} --delete SEQ`)")
        return 1
    return 0


@click.command(short_help="Mermaid state diagram of want, partition or jobrun.")
@click.argument("kind", type=click.Choice(list(DIAGRAMS)))
@click.option("--markdown", is_flag=True, help="Wrap it in a ```mermaid fence, ready for a Markdown file.")
@json_option
def diagram(kind: str, markdown: bool, as_json: bool) -> None:
    """Print the Mermaid state diagram of want, partition or jobrun, generated from its transition table."""
    machine = DIAGRAMS[kind]
    text = machine.mermaid()
    if as_json:
        emit_json({"kind": machine.kind, "mermaid": text,
                   "terminal": sorted(str(s) for s in machine.terminal),
                   "transitions": [{"from": None if a is None else str(a), "to": None if b is None else str(b),
                                    "event": name} for a, b, name in machine.edges()]})
    else:
        click.echo(f"```mermaid\n{text}```\n" if markdown else text, nl=False)
