"""Building: ``demo``, ``run``, ``restart``, and :func:`build`, which every command that runs a runtime uses."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import click
from rich.text import Text

from actors import CollisionPolicy, PartitionStatus, WantStatus
from actors._want import Anchor
from eventlog import Command, Durability, Lease, Record
from supervisor import Graph, Runtime, load_graph, open_runtime

from .._access import CliError, Db, DbParam, current_lease, reader, require_log, runtime_active
from .._build import Session, print_outcome, print_recovery, recovery_dict, root_ok, show_progress
from .._example import example_graph, week_dates
from .._output import command_dict, command_note, console, lease_text, short, status_text
from .._signals import EXIT_SIGNAL, Interrupts
from .app import db_option, durability_option, emit_json, error, json_option, policy_option, refs_callback, run_async


async def build(db: Db, graph: Graph | Callable[[], Graph], *, interrupts: Interrupts, refs: Sequence[str] = (),
                policy: str = "shrink", serve: bool = False, as_json: bool = False, show_recovery: bool = False,
                accept_graph_change: bool = False, ttl: float | None = None, sla: float | None = None,
                comment: str = "", then: Callable[[Runtime], Awaitable[None]] | None = None, afresh: str = "",
                durability: str | None = None, priority: int = 0, anchor: str = "created") -> int:
    """Open a runtime on ``db``, want ``refs`` (if any), call ``then(rt)``, and run until the want (without refs:
    every want, and every queued command) is terminal, with a progress display; with ``serve``, keep serving the
    inbox until SIGINT/SIGTERM instead. Prints the outcome once the runtime has shut down (``afresh``: how to start
    over, said when everything asked for was Live already); returns the exit code.

    The first SIGINT/SIGTERM (see :class:`Interrupts`) stops it cleanly at any point, start-up and replay included.
    """
    out, err = console(), console(stderr=True)
    session: Session | None = None
    since = 0.0  # the runtime clock when it opened: commands it rejected after that are reported
    rt: Runtime | None = None
    already_live = False
    live_in_log = 0
    with interrupts.stoppable():
        if callable(graph):
            graph = graph()
        standby = await _standby_notice(db, err) if serve else None
        async with open_runtime(db, graph, policy=cast(CollisionPolicy, policy), tune_gc=True,
                                durability=cast(Durability | None, durability),
                                accept_graph_change=accept_graph_change, standby=serve) as rt:
            interrupts.leaving = lambda: _leaving(rt)
            session = Session.begin(rt)
            since = rt.clock.now()
            if show_recovery and not as_json:
                print_recovery(out, rt)
            elif standby is not None:
                err.print(Text(f"Took over {db} from {standby.owner}.", style="bold"))
                print_recovery(err, rt)
            already_live = bool(refs) and all(rt.get_partition(r).status is PartitionStatus.LIVE for r in refs)
            live_in_log = sum(1 for p in rt.world.partitions.values() if p.status is PartitionStatus.LIVE)
            handle = await rt.want(refs, ttl=ttl, sla=sla, comment=comment, source="cli", priority=priority,
                                   anchor=cast(Anchor, anchor)) if refs else None
            if then is not None:
                await then(rt)

            async def wait() -> None:
                if handle is not None:
                    await handle.done()
                else:
                    await settle(rt)

            if serve:
                err.print(Text(f"Serving {db} (pid {os.getpid()}): submit wants with "
                               f"`wantbuild want create REF --db {db}`; stop with Ctrl-C or SIGTERM.", style="bold"))
                rt.add_hook(_announcer(err))
                await anyio.sleep_forever()
            else:
                await show_progress(session, wait, err)
    interrupts.leaving = None
    stopped_by = interrupts.first
    if session is None or rt is None:  # interrupted before the runtime was open: nothing was started
        assert stopped_by is not None
        name = signal.Signals(stopped_by).name
        error(f"interrupted by {name} while starting: no runtime ran, nothing changed in {db}")
        return EXIT_SIGNAL.get(signal.Signals(stopped_by), 1)
    outcome = session.outcome()  # read now that the shutdown has recorded everything
    rejected = await _rejected_since(db, since)
    result: dict[str, Any] = {"ok": root_ok(outcome) and not rejected, "already_live": already_live, **outcome,
                              "rejected_commands": [command_dict(c) for c in rejected]}
    if already_live:
        result["live_in_log"] = live_in_log
    if show_recovery:
        result["recovery"] = recovery_dict(rt)
    if stopped_by is not None:
        result["stopped_by"] = signal.Signals(stopped_by).name
    if as_json:
        emit_json(result)
    else:
        if already_live:
            out.print(f"Nothing to build: {short(list(refs))} {'is' if len(refs) == 1 else 'are'} already Live in "
                      f"{db}, so the want succeeded at once and no job ran. The log holds {live_in_log} Live "
                      f"partition{'' if live_in_log == 1 else 's'} (`wantbuild status"
                      f"{'' if str(db) == 'wantbuild.db' else f' --db {db}'}`).{f' {afresh}' if afresh else ''}")
        print_outcome(out, outcome)
    for cmd in rejected:
        error(command_note(cmd))
    if rejected and not serve and stopped_by is None:
        return 1
    if stopped_by is not None and not serve:
        error(f"interrupted by {signal.Signals(stopped_by).name}: the runtime stopped cleanly (runs in flight were "
              f"canceled and recorded); resume with `wantbuild run GRAPH.toml --db {db}`")
        return EXIT_SIGNAL.get(signal.Signals(stopped_by), 1)
    if not result["ok"]:
        bad = [w for w in outcome["wants"] if w.status is not WantStatus.SUCCESSFUL]
        if bad and not serve:
            w = bad[0]
            error(f"{len(bad)} want(s) did not succeed: {w.want_id} is {w.status}"
                  f"{f' ({w.reason})' if w.reason else ''}; see `wantbuild explain {w.refs[0]} --db {db}`")
            return 1
    return 0


async def _standby_notice(db: Db, err: Any) -> Lease | None:
    """``run --serve`` on a log another runtime serves: say that this one stands by (and for whom)."""
    lease = await current_lease(db)
    if lease is not None:
        held = lease_text(lease)
        err.print(Text(f"Standby: {lease.owner} serves {db}{f' ({held})' if held else ''}. This runtime replays the "
                       "log, follows it, and takes over when that one stops or loses its lease; Ctrl-C stops "
                       "waiting.", style="bold"))
    return lease


def _leaving(rt: Runtime) -> str:
    """What a forced exit leaves behind, for the farewell line."""
    runs = rt.world.in_flight_runs()
    if not runs:
        return "Nothing is in flight."
    ids = ", ".join(r.job_run_id for r in runs[:5]) + (" ..." if len(runs) > 5 else "")
    return (f"{len(runs)} run(s) stay recorded as in flight ({ids}): their job processes die with wantbuild, and "
            f"the next start on {rt.log.path} marks them Lost and builds their partitions again.")


async def _rejected_since(db: Db, since: float) -> list[Command]:
    """Queued commands a runtime took and refused (a want for a ref no job produces...) since ``since``: a run that
    took them says so rather than "nothing needed building"."""
    async with reader(db) as log:
        failed = await log.commands("failed", newest_first=True, limit=100)
    return [c for c in reversed(failed) if c.completed_at is not None and c.completed_at >= since]


async def settle(rt: Runtime) -> None:
    """Wait until no command is pending in the inbox and every want is terminal.

    Pending commands are checked before the wants: a command's want is committed before the command is marked
    complete, so once the inbox is empty every want it created is visible."""
    while True:
        if not await rt.log.pending_commands() and not any(True for _ in rt.world.active_wants()):
            return
        with anyio.move_on_after(0.5):
            await rt.wait_idle()
        await anyio.sleep(0.05)


def _announcer(err: Any) -> Callable[[Record, Any, Any], None]:
    """A hook that prints wants as they are created and end (for ``--serve``)."""

    def hook(rec: Record, old: Any, new: Any) -> None:
        if rec.entity_kind != "want":
            return
        if old is None:
            err.print(f"want {new.want_id} created ({new.source}): {short(new.refs)}")
        elif new.terminal and not old.terminal:
            line = Text(f"want {new.want_id} ")
            line.append_text(status_text(new.status))
            line.append(f": {short(new.refs)}" + (f" ({new.reason})" if new.reason else ""))
            err.print(line)

    return hook


@click.command(short_help="Build the bundled example: a week of dailies and a weekly report.")
@click.option("--db", type=DbParam(), default="wantbuild.db", show_default=True,
              help="Where to write the event log (a SQLite file or a postgresql:// URL).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default="wantbuild-data",
              show_default=True, help="Where the example jobs write their files.")
@durability_option
@json_option
def demo(db: Db, data_dir: Path, as_json: bool, durability: str | None) -> int:
    """Build the bundled example graph: a week of daily partitions and a weekly report.

    raw/{date} -> clean/{date} (a flaky job: some first attempts fail and are retried) -> daily/{date} ->
    weekly/{week}. One want for the weekly report; the jobs discover their inputs as missing dependencies and the
    supervisor creates derived wants for them. Running it again finds everything Live already.
    """
    with Interrupts() as interrupts:
        weekly = f"weekly/{week_dates()[0]}"
        afresh = f"To build the demo afresh, delete {db} and {data_dir}/ (or pass --db and --data elsewhere)."
        code = run_async(lambda: build(db, lambda: example_graph(data_dir), interrupts=interrupts, refs=(weekly,),
                                       as_json=as_json, comment="wantbuild demo", afresh=afresh,
                                       durability=durability))
    if not as_json and code == 0:
        flag = "" if str(db) == "wantbuild.db" else f" --db {db}"
        console().print(Text(f"\nNext: `wantbuild status{flag}`, `wantbuild explain {weekly}{flag}`, "
                             f"`wantbuild events{flag} --type JobRunFailed`, `wantbuild replay {db} --verify`",
                             style="dim"))
    return code


@click.command(short_help="Build wants with a graph file; --serve keeps serving.")
@click.argument("graph_file", metavar="GRAPH.toml", type=click.Path(path_type=Path))
@click.option("--want", "refs", multiple=True, callback=refs_callback, metavar="REF",
              help="A partition to build (repeat for more; together they form one want).")
@db_option
@click.option("--serve", is_flag=True, help="Keep running and serve the command inbox until SIGINT/SIGTERM.")
@policy_option
@click.option("--accept-graph-change", is_flag=True,
              help="Open a log written for a different graph (its fingerprint is updated).")
@durability_option
@json_option
def run(graph_file: Path, refs: tuple[str, ...], db: Db, serve: bool, policy: str, accept_graph_change: bool,
        as_json: bool, durability: str | None) -> int:
    """Run GRAPH.toml on the log: build the --want partitions, then stop (or keep serving with --serve).

    Without --want and --serve it finishes the wants already in the log. Exit code 0 when every want it waited
    for is Successful, 1 otherwise.
    """
    with Interrupts() as interrupts:
        return run_async(lambda: build(db, lambda: load_graph(graph_file), interrupts=interrupts, refs=refs,
                                       policy=policy, serve=serve, as_json=as_json,
                                       accept_graph_change=accept_graph_change, comment="wantbuild run",
                                       durability=durability))


@click.command(short_help="Resume a crashed runtime: report Lost runs, then finish.")
@click.argument("db", type=DbParam())
@click.argument("graph_file", metavar="GRAPH.toml", type=click.Path(path_type=Path))
@policy_option
@click.option("--accept-graph-change", is_flag=True,
              help="Resume a log written for a different graph (its fingerprint is updated).")
@durability_option
@json_option
def restart(db: Db, graph_file: Path, policy: str, accept_graph_change: bool, as_json: bool,
            durability: str | None) -> int:
    """Resume a crashed runtime on DB: report what it recovered (Lost runs, re-queued partitions), then run every
    active want to completion."""
    require_log(db)
    if run_async(lambda: runtime_active(db)):
        raise CliError(f"a runtime is running on {db}; restart is for a log whose runtime died (stop it first, "
                       "or talk to it with `wantbuild status` / `wantbuild want ...`)")
    with Interrupts() as interrupts:
        return run_async(lambda: build(db, lambda: load_graph(graph_file), interrupts=interrupts, policy=policy,
                                       as_json=as_json, show_recovery=True, accept_graph_change=accept_graph_change,
                                       durability=durability))

