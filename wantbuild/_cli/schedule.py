"""``wantbuild schedule ...``: add, list, pause, resume and remove recurring wants."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.table import Table

from actors import ScheduleState
from supervisor import CATCH_UP, Runtime, Schedule, check_schedule, fire_times, load_graph
from supervisor._schedules import NEVER_AFTER

from .._access import Db, load_world, runtime_active
from .._output import console, fmt_time, status_text
from .app import db_option, emit_json, graph_option, json_option, run_async
from .changes import change


@click.group()
def schedule() -> None:
    """Recurring wants: a cron, a timezone and a want template such as daily/{date:yesterday}."""


@schedule.command("add", short_help="Add a schedule.")
@click.argument("name")
@click.option("--cron", required=True, help="When it ticks: five cron fields, e.g. '0 2 * * *' (02:00 daily).")
@click.option("--want", "template", required=True,
              help="The want each tick creates: a ref or range with {date}, {date:yesterday}, {date:-7}, {hour}, "
                   "{hour:-1}, e.g. 'daily/{date:yesterday}'.")
@click.option("--timezone", default="UTC", show_default=True, help="The IANA timezone the cron is read in.")
@click.option("--catch-up", type=click.Choice(CATCH_UP), default="all", show_default=True,
              help="Ticks missed while no runtime ran: create all, only the latest, or none.")
@click.option("--priority", type=int, default=0, show_default=True, help="Priority of the wants it creates.")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True),
              help="TTL of its wants, in seconds from their data time.")
@click.option("--sla", type=click.FloatRange(min=0, min_open=True),
              help="SLA of its wants, in seconds from their data time.")
@graph_option("With no runtime running: check the schedule against this graph and record it now.")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@db_option
@json_option
def schedule_add(name: str, cron: str, template: str, timezone: str, catch_up: str, priority: int, ttl: float | None,
                 sla: float | None, graph_path: Path | None, timeout: float, db: Db, as_json: bool) -> int:
    """Add schedule NAME: every fire of --cron in --timezone creates the want --want renders (exactly once)."""
    sched = Schedule(name, cron, template, timezone, catch_up, priority, ttl, sla)  # type: ignore[arg-type]
    # Checked here first (cron, timezone, template; against the graph when given): bad input writes nothing.
    check_schedule(sched, now=time.time(), graph=load_graph(graph_path) if graph_path is not None else None)
    payload: dict[str, Any] = {"name": name, "cron": cron, "want": template, "timezone": timezone,
                               "catch_up": catch_up, "priority": priority, "ttl": ttl, "sla": sla}

    async def apply(rt: Runtime) -> dict[str, Any]:
        st = await rt.add_schedule(sched, source="cli")
        return {"ok": True, "schedule": st.name}

    async def main() -> int:
        code, _ = await change(db, graph_path, "schedule_add", payload, timeout=timeout, as_json=as_json,
                               apply=apply, describe=lambda r: f"schedule {name} added: {cron} ({timezone}) -> "
                                                               f"{template}")
        return code

    return run_async(main)


def _change_command(how: str, verb: str) -> Any:
    @schedule.command(how if how != "delete" else "rm", short_help=f"{verb.capitalize()} a schedule.")
    @click.argument("name")
    @click.option("--reason", default=f"{verb} from the CLI", show_default=True)
    @graph_option("With no runtime running: start one on this graph to apply it now.")
    @click.option("--timeout", type=float, default=10.0, show_default=True)
    @db_option
    @json_option
    def command(name: str, reason: str, graph_path: Path | None, timeout: float, db: Db, as_json: bool) -> int:
        exists = not isinstance(db, Path) or db.exists()

        async def main() -> int:
            if exists and not await runtime_active(db):
                world = await load_world(db)
                if name not in world.schedules:
                    known = ", ".join(sorted(world.schedules)) or "none"
                    raise click.UsageError(f"no schedule {name!r} in {db} (schedules: {known})")

            async def apply(rt: Runtime) -> dict[str, Any]:
                st = await rt._change_schedule(name, how, reason)
                return {"ok": True, "schedule": st.name, "status": str(st.status)}

            code, _ = await change(db, graph_path, "schedule_change", {"name": name, "how": how, "reason": reason},
                                   timeout=timeout, as_json=as_json, apply=apply,
                                   describe=lambda r: f"schedule {name} {r.get('status', verb)}")
            return code

        return run_async(main)

    command.__doc__ = f"{verb.capitalize()} schedule NAME."
    return command


schedule_pause = _change_command("pause", "paused")
schedule_resume = _change_command("resume", "resumed")
schedule_rm = _change_command("delete", "deleted")


@schedule.command("list", short_help="List schedules: status, cron, last and next tick.")
@db_option
@json_option
def schedule_list(db: Db, as_json: bool) -> None:
    """List the schedules of the log, with their last and next tick."""
    world = run_async(lambda: load_world(db))
    rows = sorted(world.schedules.values(), key=lambda s: s.name)
    now = time.time()
    if as_json:
        emit_json([{**_plain(s), "next_tick": _next(s, now)} for s in rows])
        return
    if not rows:
        console(stderr=True).print(f"no schedules in {db}; add one with `wantbuild schedule add NAME --cron ... "
                                   f"--want ...`")
        return
    t = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("name", "status", "cron", "timezone", "want", "catch-up", "priority", "ticks", "last tick",
                "next tick"):
        t.add_column(col)
    for s in rows:
        t.add_row(s.name, status_text(str(s.status)), s.spec.cron, s.spec.timezone, s.spec.want, s.spec.catch_up,
                  str(s.spec.priority), f"{s.ticks}" + (f" (+{s.skipped} skipped)" if s.skipped else ""),
                  fmt_time(s.last_tick) if s.ticks or s.skipped else "-", fmt_time(_next(s, now)))
    console().print(t)


def _next(s: ScheduleState, now: float) -> float | None:
    if str(s.status) != "Active":
        return None
    after = max(s.last_tick, now)
    return next(fire_times(s.spec.cron, s.spec.timezone, after, after + NEVER_AFTER), None)


def _plain(s: ScheduleState) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(s)
    return out
