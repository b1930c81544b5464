"""``wantbuild snapshot``: take, list and delete snapshots of the World (issue 15; see docs/restart.md)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from actors import SNAPSHOT_FORMAT, encode_world, rebuild
from eventlog import SnapshotInfo, open_log

from .._access import Db, require_log, runtime_active
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
