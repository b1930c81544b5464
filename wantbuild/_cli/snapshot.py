"""``wantbuild snapshot`` (take, list, delete snapshots of the World) and ``wantbuild compact`` (opt-in retention).
See docs/restart.md."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from actors import SNAPSHOT_FORMAT, Compacted, compact, encode_world, rebuild
from eventlog import SnapshotInfo, open_log

from .._access import Db, parse_until, require_log, runtime_active
from .._output import console, fmt_time
from .app import db_option, emit_json, json_option, run_async


def _info(s: SnapshotInfo) -> dict[str, Any]:
    return {"seq": s.seq, "at": s.at, "format": s.format, "size": s.size, "stored": s.stored,
            "checksum": s.checksum, "created_at": s.created_at, "readable": s.format == SNAPSHOT_FORMAT}


@click.command(short_help="Take, list or delete snapshots of the state (restart loads the newest).")
@click.option("--list", "list_only", is_flag=True, help="List the stored snapshots, newest first.")
@click.option("--delete", "delete", type=click.IntRange(min=1), multiple=True, metavar="SEQ",
              help="Delete the snapshot at this seq (repeatable).")
@db_option
@json_option
def snapshot(list_only: bool, delete: tuple[int, ...], db: Db, as_json: bool) -> None:
    """Take a snapshot of the state now (the log must not be open by a runtime: a running runtime takes its own,
    every --snapshot-every events); with --list, list them; with --delete SEQ, delete one."""
    require_log(db)
    if list_only:
        async def listing() -> list[SnapshotInfo]:
            async with open_log(db, writer=False) as log:
                return await log.snapshots()

        infos = run_async(listing)
        if as_json:
            emit_json([_info(s) for s in infos])
            return
        table = Table(title=f"snapshots in {db}")
        for col in ("seq", "event time", "size", "stored", "format"):
            table.add_column(col)
        for s in infos:
            fmt = s.format if s.format == SNAPSHOT_FORMAT else f"{s.format} (not read by this wantbuild)"
            table.add_row(str(s.seq), fmt_time(s.at), f"{s.size:,}", f"{s.stored:,}", fmt)
        console().print(table if infos else f"no snapshot in {db}")
        return
    if run_async(lambda: runtime_active(db)):
        raise click.ClickException(f"a runtime is running on {db}: it takes snapshots itself; stop it first to "
                                   "take or delete one by hand")

    async def change() -> SnapshotInfo | None:
        async with open_log(db) as log:
            if delete:
                await log.delete_snapshots(delete)
                return None
            world = await rebuild(log)
            if world.last_seq == 0:
                raise click.ClickException(f"{db} has no events: there is nothing to snapshot")
            return await log.write_snapshot(world.last_seq, world.last_at, SNAPSHOT_FORMAT, encode_world(world))

    info = run_async(change)
    if info is None:
        if as_json:
            emit_json({"deleted": list(delete)})
        else:
            console().print(f"deleted the snapshot(s) at seq {', '.join(map(str, delete))}")
        return
    if as_json:
        emit_json(_info(info))
    else:
        console().print(f"snapshot at seq {info.seq}: {info.size:,} bytes ({info.stored:,} stored)")


@click.command(short_help="Retention (opt-in): drop old events of ended wants and runs, keeping a snapshot.")
@click.option("--before", "before", required=True, metavar="SEQ|TIME",
              help="Compact through this seq (an integer) or the last event at or before this time (seconds, or ISO "
                   "2026-11-02T10:15).")
@click.option("--yes", is_flag=True, help="Do it without asking (it cannot be undone).")
@db_option
@json_option
def compact_command(before: str, yes: bool, db: Db, as_json: bool) -> None:
    """Keep a snapshot at --before and delete the events up to it of every want, job run and schedule that had
    ended by then. Restart, queries and the web view start from that snapshot; `replay --until` cannot go back
    before it (time travel starts at the oldest snapshot kept). Partitions keep all their events. Never done by
    itself: run it when the log's size matters more than its oldest history."""
    require_log(db)
    seq, when = parse_until(before)
    if run_async(lambda: runtime_active(db)):
        raise click.ClickException(f"a runtime is running on {db}: stop it first (compaction rewrites the log)")
    if not yes and not as_json:
        click.confirm(f"Delete the events of ended wants and runs up to {before} in {db}? This cannot be undone",
                      abort=True)

    async def main() -> Compacted:
        async with open_log(db) as log:
            through = seq
            if through is None:
                through = (await rebuild(log, until_time=when)).last_seq
            if not through:
                raise click.ClickException(f"no event in {db} is at or before {before}: nothing to compact")
            if through > log.last_seq:
                raise click.ClickException(f"{db} ends at seq {log.last_seq}; --before {before} is past its end")
            return await compact(log, through)

    done = run_async(main)
    if as_json:
        emit_json({"through_seq": done.through_seq, "snapshot_written": done.snapshot_written,
                   "entities": done.entities, "events_dropped": done.events_dropped})
    else:
        console().print(f"compacted {db} through seq {done.through_seq}: dropped {done.events_dropped:,} events of "
                        f"{done.entities:,} ended wants and runs; time travel now starts at seq {done.through_seq}")
