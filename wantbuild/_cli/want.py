"""``wantbuild want ...``: create, list, show and cancel wants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
from rich.text import Text

from actors import InvalidRef, WantState, WantStatus, World, rebuild, validate_ref
from eventlog import Command, CommandState, Record
from supervisor import Runtime, UnknownEntity, load_graph, parse_partition_set, read_refs

from .._access import (
    CliError,
    Db,
    load_world,
    reader,
    rejected_since_previous,
    runtime_active,
    wait_for_command,
)
from .._output import (
    append_counts,
    command_dict,
    command_note,
    command_what,
    commands_table,
    console,
    events_table,
    fmt_time,
    partitions_table,
    record_dict,
    runs_table,
    short,
    status_text,
    wants_table,
)
from .._signals import Interrupts
from .app import db_option, emit_json, graph_option, json_option, run_async
from .changes import change
from .query import ALL_GRAPHS_HELP, every_graph
from .run import build

T = TypeVar("T")


@click.group()
def want() -> None:
    """Create, list, show and cancel wants."""


@want.command("create", short_help="Want partitions built: refs, ranges, a file of refs.")
@click.argument("specs", nargs=-1, metavar="REF|RANGE...")
@click.option("--from-file", "from_file", type=click.File("r", encoding="utf-8"),
              help="Also want the refs in this file, one per line (# comments and blank lines skipped; - for stdin).")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), help="Expire the want after this many seconds.")
@click.option("--sla", type=click.FloatRange(min=0, min_open=True),
              help="Record an SLA miss if not Successful within this many seconds.")
@click.option("--anchor", type=click.Choice(["created", "data_time"]), default="created", show_default=True,
              help="What --ttl and --sla count from: the want's creation, or its data's time (the latest date or "
                   "hour its refs name).")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is planned first.")
@click.option("--comment", default="", help="A note kept with the want.")
@graph_option("With no runtime running: start one on this graph and build the want now.")
@click.option("--wait", is_flag=True, help="Wait until the want is terminal (exit 0 only if it is Successful); with no "
              "runtime running, first wait --timeout seconds for one to start and take it.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for a runtime to take the command (the running one, or with --wait one to start).")
@db_option
@json_option
def want_create(specs: tuple[str, ...], from_file: TextIO | None, ttl: float | None, sla: float | None, anchor: str,
                priority: int, comment: str, graph_path: Path | None, wait: bool, timeout: float, db: Db,
                as_json: bool) -> int:
    """Want partitions built: each REF, each RANGE (daily/2026-01-01..2026-11-30, hourly/2026-11-02T00..23: START..END
    in place of one typed parameter of a job's output pattern), and the refs of --from-file.

    A range is stored as one want however many partitions it names, and planned as capacity frees up.
    """
    if not specs and from_file is None:
        raise click.UsageError("name at least one REF or RANGE, or give --from-file FILE (- for stdin)")
    literal, ranges = _split_specs(specs)
    if from_file is not None:
        try:
            literal.extend(read_refs(from_file, source=from_file.name))
        except InvalidRef as e:
            raise click.BadParameter(str(e), param_hint="--from-file") from None
    payload: dict[str, Any] = {"refs": literal, "comment": comment}
    if ranges:
        payload["specs"] = ranges
    for key, value in (("ttl", ttl), ("sla", sla)):
        if value is not None:
            payload[key] = value
    if anchor != "created":
        payload["anchor"] = anchor
    if priority:
        payload["priority"] = priority

    async def main() -> int:
        if graph_path is not None and not await runtime_active(db):
            graph = load_graph(graph_path)
            wanted = parse_partition_set(graph, ranges, refs=literal)
            with Interrupts() as interrupts:
                return await build(db, graph, interrupts=interrupts, refs=wanted, ttl=ttl, sla=sla, comment=comment,
                                   as_json=as_json, priority=priority, anchor=anchor)
        if wait and not await runtime_active(db):
            return await _queue_and_wait(db, payload, timeout, as_json)
        code, result = await change(db, None, "want", payload, timeout=timeout, as_json=as_json, quiet=wait,
                                    describe=lambda r: f"created want {r['want_id']} (through the running runtime)"
                                    + (f": {r['size']:,} partitions" if r.get("size", 0) > 1 else ""))
        if wait and result.get("via") == "inbox":
            return await _wait_for_want(db, result["want_id"], as_json)
        return code

    return run_async(main)


def _split_specs(specs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(literal refs, validated; range specs, read against the graph by whoever has it)."""
    literal: list[str] = []
    ranges: list[str] = []
    for spec in specs:
        if ".." in spec and any(".." in seg and seg != ".." for seg in spec.split("/")):
            ranges.append(spec)
        else:
            try:
                literal.append(validate_ref(spec))
            except InvalidRef as e:
                raise click.BadParameter(str(e), param_hint="REF") from None
    return literal, ranges


async def _queue_and_wait(db: Db, payload: dict[str, Any], timeout: float, as_json: bool) -> int:
    """``want create --wait`` with no runtime running: queue the command, wait ``timeout`` s for a runtime to take it,
    then for the want to end. Never 0 unless the want was created and is Successful."""
    async with reader(db) as log:
        command_id = await log.submit_command("want", payload)
        tell_rejected_now = await rejected_since_previous(log, command_id)
        console(stderr=True).print(f"No runtime is running on {db}: queued as command {command_id}; waiting up to "
                                   f"{timeout:g} s for a runtime to take it.")
        done = await wait_for_command(log, command_id, timeout)
    for cmd in tell_rejected_now:
        console(stderr=True).print(f"Note: {command_note(cmd)}")
    if done is None:
        raise CliError(f"queued as command {command_id}, but no runtime took it within {timeout:g} s; it stays queued "
                       f"and is applied when a runtime next opens the log (`wantbuild run GRAPH.toml --db {db}`); "
                       f"`wantbuild want show {command_id} --db {db}` says how it went")
    if done.state == "failed":
        raise CliError(f"command {command_id} was rejected by the runtime: {done.error}")
    assert done.result is not None
    return await _wait_for_want(db, str(done.result["want_id"]), as_json)


async def _wait_for_want(db: Db, want_id: str, as_json: bool) -> int:
    """After ``want create --wait``: follow the log until the want is terminal; exit 0 if it is Successful."""
    async with reader(db) as log:
        history = await log.history("want", want_id)
        world = World()
        for rec in history:
            world.apply(rec)
        state = world.wants[want_id]
        if not state.terminal:
            async for rec in log.follow(history[-1].seq + 1, kinds=["want"], entity_id=want_id):
                world.apply(rec)
                state = world.wants[want_id]
                if state.terminal:
                    break
    if as_json:
        emit_json(state)
    else:
        line = Text(f"want {state.want_id} ")
        line.append_text(status_text(state.status))
        console().print(line)
    return 0 if state.status is WantStatus.SUCCESSFUL else 1


def unknown_want(db: Db, want_id: str) -> UnknownEntity:
    return UnknownEntity(f"no want {want_id!r} in {db}; list them with `wantbuild want list --db {db}`")


@want.command("list", short_help="List wants, filtered by status.")
@click.option("--status", "statuses", multiple=True, type=click.Choice([str(s) for s in WantStatus],
              case_sensitive=False), help="Only wants in this status (repeatable).")
@click.option("--active", is_flag=True, help="Only wants that are not terminal yet.")
@db_option
@click.option("--all-graphs", is_flag=True, help=ALL_GRAPHS_HELP)
@json_option
def want_list(statuses: tuple[str, ...], active: bool, db: Db, all_graphs: bool, as_json: bool) -> None:
    """List wants (oldest first), then the want commands that have no want: queued, or rejected by the runtime."""
    wanted = {s.lower() for s in statuses}

    def read(log_db: Db) -> tuple[list[WantState], list[Command]]:
        async def main() -> tuple[World, list[Command]]:
            async with reader(log_db) as log:
                world = await rebuild(log)
                states: list[CommandState] = []
                if not statuses or active:
                    states.append("pending")  # queued: becomes a want when a runtime takes it
                if not active and (not statuses or "failed" in wanted):
                    states.append("failed")  # rejected: never became a want
                commands = [c for state in states for c in await log.commands(state) if c.name == "want"]
                return world, sorted(commands, key=lambda c: c.id)

        world, commands = run_async(main)
        return [w for _, w in sorted(world.wants.items())
                if (not wanted or str(w.status).lower() in wanted) and (not active or not w.terminal)], commands

    if not all_graphs:
        _want_list(db, *read(db), filtered=bool(statuses or active), as_json=as_json)
        return
    found = [(log, *read(log)) for log in every_graph(db, "want list")]
    if as_json:
        emit_json([{"db": str(log), "wants": rows} for log, rows, _ in found])
        for log, _, commands in found:
            for cmd in commands:
                console(stderr=True).print(f"Note: {log}: {command_note(cmd)}")
        return
    for i, (log, rows, commands) in enumerate(found):
        if i:
            console().print()
        console().print(Text(str(log), style="bold"))
        _want_list(log, rows, commands, filtered=bool(statuses or active), as_json=False)


def _want_list(db: Db, rows: list[WantState], commands: list[Command], *, filtered: bool, as_json: bool) -> None:
    if as_json:
        emit_json(rows)
        for cmd in commands:
            console(stderr=True).print(f"Note: {command_note(cmd)}")
        return
    if rows:
        console().print(wants_table(rows))
    elif not commands:
        console(stderr=True).print(f"no wants{' matching' if filtered else ''} in {db}")
    if commands:
        if rows:
            console().print()
        console().print(commands_table(commands, title="want commands without a want (queued, or rejected)"))


SHOW_LIMIT = 20
"""``want show`` lists at most this many partitions, runs and derived wants (those not done first) unless --all."""

_DONE = {"Live", "Succeeded", "Successful"}
_FIRST = {"Failed": 0, "UpstreamFailed": 1}


def _shown(items: Sequence[T], status: Callable[[T], str], show_all: bool) -> list[T]:
    """All of ``items`` if few (or ``show_all``); else the first SHOW_LIMIT not done, failures first."""
    if show_all or len(items) <= SHOW_LIMIT:
        return list(items)
    pending = [x for x in items if status(x) not in _DONE]
    return sorted(pending, key=lambda x: _FIRST.get(status(x), 2))[:SHOW_LIMIT]


def _heading(title: str, counts: dict[str, int], shown: int) -> Text:
    total = sum(counts.values())
    line = Text(f"{title}: {total}", style="italic")
    if total:
        line.append(" — ")
        append_counts(line, counts)
    if shown < total:
        line.append(f"; showing {shown}" + (" not done, failures first" if shown else ""), style="dim")
    return line


@want.command("show", short_help="One want (or the command that asked for it): state, partitions, runs, history.")
@click.argument("want_id", metavar="WANT_ID|COMMAND_ID")
@click.option("--all", "show_all", is_flag=True,
              help=f"List every partition, run and derived want (by default, beyond {SHOW_LIMIT}: counts per "
                   "status and the first ones not done).")
@db_option
@json_option
def want_show(want_id: str, show_all: bool, db: Db, as_json: bool) -> int:
    """Show one want: its state, partitions, runs, derived wants and history.

    A large want is summarised: counts per status, and the first partitions, runs and derived wants that are not
    done (failures first); --all lists them all. Given the number of a queued command (what `want create`
    printed), show that command: queued, rejected (and why), or the want it made.
    """

    async def main() -> tuple[World, list[Record], WantState] | Command:
        async with reader(db) as log:
            world = await rebuild(log)
            st = world.wants.get(want_id)
            if st is None and want_id.isdigit():
                cmd = await log.command(int(want_id))
                if cmd is None:
                    raise UnknownEntity(f"no want and no command {want_id} in {db}; list them with "
                                        f"`wantbuild want list --db {db}`")
                made = cmd.result.get("want_id") if cmd.state == "ok" and cmd.result else None
                if made is None or made not in world.wants:
                    return cmd
                st = world.wants[made]
            if st is None:
                raise unknown_want(db, want_id)
            return world, await log.history("want", st.want_id), st

    found = run_async(main)
    if isinstance(found, Command):
        return _show_command(found, as_json)
    world, history, st = found
    want_id = st.want_id
    all_parts = [world.partition(r) for r in st.refs]
    all_runs = sorted((r for r in world.runs.values() if want_id in r.wants), key=lambda r: r.job_run_id)
    all_derived = sorted((w for w in world.wants.values() if want_id in w.parent_want_ids),
                         key=lambda w: w.want_id)
    counts = {"partitions": dict(Counter(str(p.status) for p in all_parts)),
              "runs": dict(Counter(str(r.status) for r in all_runs)),
              "derived_wants": dict(Counter(str(w.status) for w in all_derived))}
    parts = _shown(all_parts, lambda p: str(p.status), show_all)
    runs = _shown(all_runs, lambda r: str(r.status), show_all)
    derived = _shown(all_derived, lambda w: str(w.status), show_all)
    complete = (len(parts), len(runs), len(derived)) == (len(all_parts), len(all_runs), len(all_derived))
    if as_json:
        emit_json({"want": st, "complete": complete, "counts": counts, "partitions": parts, "runs": runs,
                   "derived_wants": derived, "history": [record_dict(r) for r in history]})
        return 0
    out = console()
    head = Text(f"want {st.want_id} ", style="bold")
    head.append_text(status_text(st.status))
    out.print(head)
    info = [("wants", short(st.refs)), ("source", st.source), ("root", st.root_want_id),
            ("parents", ", ".join(st.parent_want_ids) or "-"),
            ("ttl", f"{st.ttl:g} s" if st.ttl else "-"), ("sla", f"{st.sla:g} s" if st.sla else "-"),
            ("sla missed", "yes" if st.sla_missed else "no"), ("anchor", st.anchor),
            ("data time", fmt_time(st.data_time)),
            ("priority", str(st.priority)), ("schedule", f"{st.schedule} (tick {fmt_time(st.tick or 0)})"
                                                          if st.schedule else "-"), ("comment", st.comment or "-"),
            ("reason", st.reason or "-")]
    for k, v in info:
        out.print(f"  {k:<11} {v}")
    out.print()
    out.print(_heading("partitions", counts["partitions"], len(parts)))
    if parts:
        out.print(partitions_table(parts, world))
    if all_runs:
        out.print()
        out.print(_heading("job runs serving it", counts["runs"], len(runs)))
        if runs:
            out.print(runs_table(runs))
    if all_derived:
        out.print()
        out.print(_heading("derived wants", counts["derived_wants"], len(derived)))
        if derived:
            out.print(wants_table(derived))
    if not complete:
        out.print()
        out.print(Text(f"A large want: pass --all to list every partition, run and derived want "
                       f"(`wantbuild want show {want_id} --all`).", style="dim"))
    out.print()
    out.print(Text("history", style="italic"))
    out.print(events_table(history, max_payload=None if show_all else 400))
    return 0


def _show_command(cmd: Command, as_json: bool) -> int:
    """A command that made no want: queued (exit 0) or rejected (exit 1, with the runtime's error)."""
    if as_json:
        emit_json({"command": command_dict(cmd)})
    else:
        out = console()
        head = Text(f"command {cmd.id} ", style="bold")
        head.append(cmd.state, style="bold red" if cmd.state == "failed" else "cyan")
        out.print(head)
        for k, v in [("asks", command_what(cmd)), ("submitted", fmt_time(cmd.submitted_at)),
                     ("completed", fmt_time(cmd.completed_at)), ("error", cmd.error or "-")]:
            out.print(f"  {k:<11} {v}")
        out.print(command_note(cmd))
    return 1 if cmd.state == "failed" else 0


@want.command("cancel", short_help="Cancel an active want.")
@click.argument("want_id")
@click.option("--reason", default="canceled from the CLI", show_default=True)
@graph_option("With no runtime running: start one on this graph to apply the cancel, and run to completion.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the running runtime to answer.")
@db_option
@json_option
def want_cancel(want_id: str, reason: str, graph_path: Path | None, timeout: float, db: Db, as_json: bool) -> int:
    """Cancel a want; runs that no active want needs any more are canceled too."""

    async def main() -> int:
        world = await load_world(db)
        st = world.wants.get(want_id)
        if st is None:
            raise unknown_want(db, want_id)
        if st.terminal:  # cancel races with completion: the want is not active, which is what was asked
            if as_json:
                emit_json({"ok": True, "want_id": want_id, "status": str(st.status), "already_terminal": True})
            else:
                console().print(f"want {want_id} is already {st.status}: nothing to cancel")
            return 0

        async def apply(rt: Runtime) -> dict[str, Any]:
            new = await rt.cancel(want_id, reason)
            return {"ok": True, "want_id": want_id, "status": str(new.status)}

        code, _ = await change(db, graph_path, "cancel", {"want_id": want_id, "reason": reason}, timeout=timeout,
                               as_json=as_json, apply=apply,
                               describe=lambda r: f"want {r['want_id']} {r.get('status', 'Canceled')}")
        return code

    return run_async(main)
