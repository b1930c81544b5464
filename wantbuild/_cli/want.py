"""``wantbuild want ...``: create, list, show and cancel wants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from actors import WantState, WantStatus, World, rebuild
from eventlog import Record
from supervisor import Runtime, UnknownEntity, load_graph

from .._access import CliError, Db, load_world, reader, runtime_active
from .._output import console, events_table, partitions_table, record_dict, runs_table, status_text, wants_table
from .._signals import Interrupts
from .app import db_option, emit_json, graph_option, json_option, refs_callback, run_async
from .changes import change
from .run import build


@click.group()
def want() -> None:
    """Create, list, show and cancel wants."""


@want.command("create", short_help="Want partitions built.")
@click.argument("refs", nargs=-1, required=True, callback=refs_callback, metavar="REF...")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), help="Expire the want after this many seconds.")
@click.option("--sla", type=click.FloatRange(min=0, min_open=True),
              help="Record an SLA miss if not Successful within this many seconds.")
@click.option("--comment", default="", help="A note kept with the want.")
@graph_option("With no runtime running: start one on this graph and build the want now.")
@click.option("--wait", is_flag=True, help="Through a running runtime: wait until the want is terminal.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the running runtime to answer.")
@db_option
@json_option
def want_create(refs: tuple[str, ...], ttl: float | None, sla: float | None, comment: str, graph_path: Path | None,
                wait: bool, timeout: float, db: Db, as_json: bool) -> int:
    """Want partitions REF... built."""
    payload: dict[str, Any] = {"refs": list(refs), "comment": comment}
    if ttl is not None:
        payload["ttl"] = ttl
    if sla is not None:
        payload["sla"] = sla

    async def main() -> int:
        if graph_path is not None and not await runtime_active(db):
            with Interrupts() as interrupts:
                return await build(db, lambda: load_graph(graph_path), interrupts=interrupts, refs=refs, ttl=ttl,
                                   sla=sla, comment=comment, as_json=as_json)
        code, result = await change(db, None, "want", payload, timeout=timeout, as_json=as_json, quiet=wait,
                                    describe=lambda r: f"created want {r['want_id']} (through the running runtime)")
        if wait and result.get("via") == "inbox":
            return await _wait_for_want(db, result["want_id"], as_json)
        return code

    return run_async(main)


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
@json_option
def want_list(statuses: tuple[str, ...], active: bool, db: Db, as_json: bool) -> None:
    """List wants (oldest first)."""
    world = run_async(lambda: load_world(db))
    wanted = {s.lower() for s in statuses}
    rows = [w for _, w in sorted(world.wants.items())
            if (not wanted or str(w.status).lower() in wanted) and (not active or not w.terminal)]
    if as_json:
        emit_json(rows)
    elif rows:
        console().print(wants_table(rows))
    else:
        console(stderr=True).print(f"no wants{' matching' if statuses or active else ''} in {db}")


@want.command("show", short_help="One want: state, partitions, runs, history.")
@click.argument("want_id")
@db_option
@json_option
def want_show(want_id: str, db: Db, as_json: bool) -> None:
    """Show one want: its state, partitions, runs, derived wants and history."""

    async def main() -> tuple[World, list[Record], WantState]:
        async with reader(db) as log:
            world = await rebuild(log)
            st = world.wants.get(want_id)
            if st is None:
                raise unknown_want(db, want_id)
            return world, await log.history("want", want_id), st

    world, history, st = run_async(main)
    parts = [world.partition(r) for r in st.refs]
    runs = sorted((r for r in world.runs.values() if want_id in r.wants), key=lambda r: r.job_run_id)
    derived = sorted((w for w in world.wants.values() if want_id in w.parent_want_ids), key=lambda w: w.want_id)
    if as_json:
        emit_json({"want": st, "partitions": parts, "runs": runs, "derived_wants": derived,
                   "history": [record_dict(r) for r in history]})
        return
    out = console()
    head = Text(f"want {st.want_id} ", style="bold")
    head.append_text(status_text(st.status))
    out.print(head)
    info = [("source", st.source), ("root", st.root_want_id), ("parents", ", ".join(st.parent_want_ids) or "-"),
            ("ttl", f"{st.ttl:g} s" if st.ttl else "-"), ("sla", f"{st.sla:g} s" if st.sla else "-"),
            ("sla missed", "yes" if st.sla_missed else "no"), ("comment", st.comment or "-"),
            ("reason", st.reason or "-")]
    for k, v in info:
        out.print(f"  {k:<11} {v}")
    out.print()
    out.print(partitions_table(parts, world, title="partitions"))
    if runs:
        out.print()
        out.print(runs_table(runs, title="job runs serving it"))
    if derived:
        out.print()
        out.print(wants_table(derived, title="derived wants"))
    out.print()
    out.print(Text("history", style="italic"))
    out.print(events_table(history))


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
        if st.terminal:
            raise CliError(f"want {want_id} is already {st.status}; only an active want can be canceled")

        async def apply(rt: Runtime) -> dict[str, Any]:
            new = await rt.cancel(want_id, reason)
            return {"ok": True, "want_id": want_id, "status": str(new.status)}

        code, _ = await change(db, graph_path, "cancel", {"want_id": want_id, "reason": reason}, timeout=timeout,
                               as_json=as_json, apply=apply,
                               describe=lambda r: f"want {r['want_id']} {r.get('status', 'Canceled')}")
        return code

    return run_async(main)
