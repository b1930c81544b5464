"""``wantbuild taint``: mark Live partitions Tainted (do not read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from actors import PartitionStatus
from supervisor import Runtime

from .._access import CliError, Db, load_world
from .._output import short
from .app import db_option, graph_option, json_option, refs_callback, run_async
from .changes import change


@click.command(short_help="Mark Live partitions Tainted (do not read).")
@click.argument("refs", nargs=-1, required=True, callback=refs_callback, metavar="REF...")
@click.option("--reason", required=True, help="Why the data must not be read (kept in the log).")
@graph_option("With no runtime running: start one on this graph to apply the taint, and run to completion.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the running runtime to answer.")
@db_option
@json_option
def taint(refs: tuple[str, ...], reason: str, graph_path: Path | None, timeout: float, db: Db,
          as_json: bool) -> int:
    """Mark Live partitions Tainted ("do not read"): rebuilt when next wanted, at once if an active want covers
    them."""

    async def main() -> int:
        world = await load_world(db)
        for ref in refs:
            p = world.partition(ref)
            if p.status is not PartitionStatus.LIVE:
                raise CliError(f"{ref} is {p.status} in {db}; only a Live partition can be tainted")

        async def apply(rt: Runtime) -> dict[str, Any]:
            sts = await rt.taint(refs, reason)
            return {"ok": True, "partitions": [s.ref for s in sts]}

        code, _ = await change(db, graph_path, "taint", {"refs": list(refs), "reason": reason}, timeout=timeout,
                               as_json=as_json, apply=apply,
                               describe=lambda r: f"tainted {short(r.get('partitions', list(refs)), 6)}")
        return code

    return run_async(main)
