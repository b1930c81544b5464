"""``wantbuild taint``: taint Live partitions and what was built from them; list, show and cancel taints.

``wantbuild taint REF... --reason TEXT`` is ``wantbuild taint create REF...``: the group runs ``create`` when its
first argument is not one of its commands (a ref named like a command needs ``taint create``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click
from rich.table import Table
from rich.text import Text

from actors import (
    EventFilter,
    PartitionStatus,
    TaintApplied,
    TaintRestored,
    TaintState,
    TaintStatus,
    World,
    cascade,
    rebuild,
)
from supervisor import Runtime, UnknownEntity

from .._access import CliError, Db, load_world, reader
from .._output import console, events_table, fmt_time, record_dict, short, status_text
from .._signals import Interrupts
from .app import db_option, emit_json, graph_option, json_option, refs_callback, run_async
from .changes import change


class TaintGroup(click.Group):
    """``taint REF...`` runs ``taint create REF...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


@click.group("taint", cls=TaintGroup)
def taint() -> None:
    """Taint partitions ("do not read") and what was built from them; list, show and cancel taints.

    `wantbuild taint REF... --reason TEXT` is `wantbuild taint create REF... --reason TEXT`.
    """


@taint.command("create", short_help="Taint Live partitions and what was built from them.")
@click.argument("refs", nargs=-1, required=True, callback=refs_callback, metavar="REF...")
@click.option("--reason", required=True, help="Why the data must not be read (kept in the log).")
@click.option("--no-cascade", is_flag=True, help="Taint only REF..., not what was built from them.")
@click.option("--depth", type=click.IntRange(min=0), help="Cascade at most this many lineage levels down "
              "(default: all).")
@click.option("--no-wait", is_flag=True, help="Return once the taint is created; do not follow its cascade.")
@graph_option("With no runtime running: start one on this graph to apply the taint, and run to completion.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the running runtime to take the command.")
@db_option
@json_option
def taint_create(refs: tuple[str, ...], reason: str, no_cascade: bool, depth: int | None, no_wait: bool,
                 graph_path: Path | None, timeout: float, db: Db, as_json: bool) -> int:
    """Taint Live partitions REF... ("do not read") and, unless --no-cascade, every Live partition built from them
    through the lineage (--depth levels at most). Active wants covering tainted partitions rebuild them, upstream
    first. Follows the cascade with a progress display until it is applied (--no-wait: return at once)."""

    async def main() -> int:
        world = await load_world(db)
        for ref in refs:
            p = world.partition(ref)
            if p.status is not PartitionStatus.LIVE:
                raise CliError(f"{ref} is {p.status} in {db}; only a Live partition can be tainted")
        if depth is not None and no_cascade:
            raise click.UsageError("--depth limits the cascade; it makes no sense with --no-cascade")
        reach = _reach(world, refs, not no_cascade, depth)
        payload: dict[str, Any] = {"refs": list(refs), "reason": reason, "cascade": not no_cascade, "depth": depth}

        async def apply(rt: Runtime) -> dict[str, Any]:
            t = await rt.taint(refs, reason, cascade=not no_cascade, depth=depth, wait=True)
            return {"ok": True, "taint_id": t.taint_id, "partitions": list(t.refs), "tainted": t.tainted}

        code, result = await change(
            db, graph_path, "taint", payload, timeout=timeout, as_json=as_json, apply=apply, quiet=True,
            describe=lambda r: f"taint {r.get('taint_id', '')}: {short(r.get('partitions', list(refs)), 6)}")
        if result.get("via") != "inbox":  # queued, or applied by a runtime of our own (which printed the outcome)
            return code
        taint_id = str(result["taint_id"])
        state = await _taint_state(db, taint_id) if no_wait else await _follow_cascade(db, taint_id, reach,
                                                                                       quiet=as_json)
        if as_json:
            emit_json({**result, "taint": state})
        else:
            console().print(_summary(state))
        return code

    return run_async(main)


def _reach(world: World, refs: Sequence[str], cascade_: bool, depth: int | None) -> int:
    """How many partitions the taint will reach (Live ones), for the progress display's total."""
    st = TaintState(taint_id="t-preview", status=TaintStatus.APPLYING, refs=tuple(refs),
                    generations=tuple(world.partition(r).generation for r in refs), reason="", cascade=cascade_,
                    depth=depth, created_at=0.0, updated_at=0.0, entity_seq=0)
    return sum(1 for level in cascade(world, st) for r in level
               if world.partition(r.ref).status is PartitionStatus.LIVE)


async def _taint_state(db: Db, taint_id: str) -> TaintState:
    async with reader(db) as log:
        world = World()
        for rec in await log.history("taint", taint_id):
            world.apply(rec)
    st = world.taints.get(taint_id)
    if st is None:
        raise UnknownEntity(f"no taint {taint_id!r} in {db}")
    return st


async def _follow_cascade(db: Db, taint_id: str, total: int, *, quiet: bool) -> TaintState:
    """Follow the log until the taint's first wave is applied, showing how many partitions are tainted."""
    err = console(stderr=True)
    tty = err.is_terminal and not quiet
    done = 0
    last_line = 0.0
    async with reader(db) as log:
        history = await log.history("taint", taint_id)
        start = history[0].seq if history else log.last_seq + 1
        flt = EventFilter(types=["PartitionTainted", "TaintApplied"])
        with Interrupts(announce=False) as interrupts, interrupts.stoppable():
            async for rec in log.follow(start):
                if not flt(rec):
                    continue
                if isinstance(rec.event, TaintApplied) and rec.entity_id == taint_id:
                    break
                if getattr(rec.event, "taint_id", None) == taint_id:
                    done += 1
                    now = anyio.current_time()
                    if not quiet and (tty or now - last_line >= 1.0):
                        last_line = now
                        line = f"tainting: {done:,}/{max(total, done):,} partitions"
                        if tty:
                            sys.stderr.write(f"\r{line}")
                            sys.stderr.flush()
                        else:
                            err.print(line)
        if tty:
            sys.stderr.write("\n")
    return await _taint_state(db, taint_id)


def _summary(st: TaintState) -> Text:
    line = Text(f"taint {st.taint_id} ")
    line.append_text(status_text(str(st.status)))
    reach = "no cascade" if not st.cascade else ("all levels down" if st.depth is None else f"{st.depth} level(s) down")
    line.append(f": {short(list(st.refs), 6)} ({reach}); {st.tainted} partition(s) tainted")
    if st.status is TaintStatus.APPLYING:
        line.append(" so far; the runtime goes on with the cascade")
    return line


@taint.command("list", short_help="List taints.")
@click.option("--active", is_flag=True, help="Only taints not canceled.")
@db_option
@json_option
def taint_list(active: bool, db: Db, as_json: bool) -> None:
    """List taints (oldest first): what each named, why, how far it reaches, how many partitions it tainted."""
    world = run_async(lambda: load_world(db))
    rows = [t for _, t in sorted(world.taints.items()) if not active or t.active]
    if as_json:
        emit_json(rows)
    elif rows:
        console().print(taints_table(rows))
    else:
        console(stderr=True).print(f"no taints{' active' if active else ''} in {db}")


def taints_table(taints: Sequence[TaintState]) -> Table:
    from rich import box

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("taint", "status", "refs", "reach", "tainted", "restored", "created", "reason"):
        t.add_column(col, overflow="fold")
    for st in taints:
        reach = "none" if not st.cascade else ("all" if st.depth is None else str(st.depth))
        t.add_row(st.taint_id, status_text(str(st.status)), short(list(st.refs)), reach, str(st.tainted),
                  "-" if st.restored is None else str(st.restored), fmt_time(st.created_at), st.reason)
    return t


@taint.command("show", short_help="One taint: what it named, what it reached, its events.")
@click.argument("taint_id", metavar="TAINT")
@click.option("--all", "show_all", is_flag=True, help="Every partition it tainted (default: the first 50).")
@db_option
@json_option
def taint_show(taint_id: str, show_all: bool, db: Db, as_json: bool) -> None:
    """Show taint TAINT: its fields, the partitions it tainted (and which are still Tainted, or were rebuilt or
    restored since), and its events."""

    async def main() -> tuple[World, list[Any]]:
        async with reader(db) as log:
            world = await rebuild(log)
            if taint_id not in world.taints:
                raise UnknownEntity(f"no taint {taint_id!r} in {db}; list them with `wantbuild taint list --db {db}`")
            tainted = [rec async for rec in log.read(1, kinds=["partition"], types=["PartitionTainted"])
                       if getattr(rec.event, "taint_id", None) == taint_id]
            return world, [*await log.history("taint", taint_id), *tainted]

    world, records = run_async(main)
    st = world.taints[taint_id]
    parts = []
    for rec in records:
        if rec.entity_kind != "partition":
            continue
        now = world.partition(rec.entity_id)
        ev = rec.event
        parts.append({"ref": rec.entity_id, "depth": getattr(ev, "depth", 0), "via": getattr(ev, "via", None),
                      "now": str(now.status), "now_generation": now.generation,
                      "still_tainted_by_it": now.status is PartitionStatus.TAINTED and now.tainted_by == taint_id})
    own = sorted((r for r in records if r.entity_kind == "taint"), key=lambda r: r.seq)
    if as_json:
        emit_json({"taint": st, "partitions": parts, "events": [record_dict(r) for r in own]})
        return
    out = console()
    head = Text(f"taint {st.taint_id} ", style="bold")
    head.append_text(status_text(str(st.status)))
    out.print(head)
    reach = "no cascade" if not st.cascade else ("all levels down" if st.depth is None else f"{st.depth} level(s)")
    info = [("named", ", ".join(f"{r}@{g}" for r, g in zip(st.refs, st.generations, strict=False))),
            ("reason", st.reason), ("reach", reach), ("created", fmt_time(st.created_at)),
            ("tainted", str(st.tainted)), ("canceled", st.canceled_reason or "-"),
            ("restored", "-" if st.restored is None else str(st.restored))]
    for k, v in info:
        out.print(f"  {k:<9} {v}")
    out.print()
    still = sum(1 for p in parts if p["still_tainted_by_it"])
    out.print(Text(f"partitions it tainted: {len(parts)}, {still} still Tainted by it", style="italic"))
    from rich import box

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("partition", "depth", "via", "now"):
        t.add_column(col, overflow="fold")
    for p in parts if show_all else parts[:50]:
        t.add_row(p["ref"], str(p["depth"]), p["via"] or "-", Text(f"{p['now']} @{p['now_generation']}"))
    out.print(t)
    out.print()
    out.print(Text("events", style="italic"))
    out.print(events_table(own, max_payload=None if show_all else 300))


@taint.command("cancel", short_help="Cancel a taint: restore what was not rebuilt.")
@click.argument("taint_id", metavar="TAINT")
@click.option("--reason", default="canceled from the CLI", show_default=True)
@graph_option("With no runtime running: start one on this graph to apply the cancel, and run to completion.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the running runtime to take the command.")
@db_option
@json_option
def taint_cancel(taint_id: str, reason: str, graph_path: Path | None, timeout: float, db: Db, as_json: bool) -> int:
    """Cancel taint TAINT: the partitions it tainted that were not rebuilt meanwhile (and that no other active taint
    reaches) go back to Live, at their generations."""

    async def main() -> int:
        world = await load_world(db)
        st = world.taints.get(taint_id)
        if st is None:
            raise UnknownEntity(f"no taint {taint_id!r} in {db}; list them with `wantbuild taint list --db {db}`")
        if not st.active:
            if as_json:
                emit_json({"ok": True, "taint_id": taint_id, "status": str(st.status), "already_canceled": True})
            else:
                console().print(f"taint {taint_id} is already Canceled: nothing to cancel")
            return 0

        async def apply(rt: Runtime) -> dict[str, Any]:
            t = await rt.cancel_taint(taint_id, reason)
            return {"ok": True, "taint_id": taint_id, "status": str(t.status), "restored": t.restored}

        code, result = await change(db, graph_path, "cancel_taint", {"taint_id": taint_id, "reason": reason},
                                    timeout=timeout, as_json=as_json, apply=apply, quiet=True,
                                    describe=lambda r: f"taint {taint_id} {r.get('status', 'Canceled')}")
        if result.get("via") != "inbox":
            return code
        final = await _wait_restored(db, taint_id)
        if as_json:
            emit_json({**result, "taint": final})
        else:
            console().print(f"taint {taint_id} Canceled; {final.restored or 0} partition(s) restored to Live")
        return code

    return run_async(main)


async def _wait_restored(db: Db, taint_id: str) -> TaintState:
    async with reader(db) as log:
        history = await log.history("taint", taint_id)
        if not any(isinstance(r.event, TaintRestored) for r in history):
            with Interrupts(announce=False) as interrupts, interrupts.stoppable():
                async for rec in log.follow(history[-1].seq + 1 if history else 1, kinds=["taint"],
                                            entity_id=taint_id):
                    if isinstance(rec.event, TaintRestored):
                        break
    return await _taint_state(db, taint_id)

