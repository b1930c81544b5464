"""The ``wantbuild`` command line: click parses, rich draws.

The CLI owns the terminal: results go to stdout (tables, or JSON with ``--json``), progress, notes and errors to
stderr, and library logs (structlog) to stderr too, quiet unless ``-v``. Every user error is one line on stderr
(``Error: what is wrong; how to fix it``) with exit code 2 for usage errors and 1 for failures; never a
traceback (an internal error shows one only with ``-vv``).

Queries read the log directly (read-only; safe while a runtime runs). Changes go through the running runtime's
command inbox; with no runtime running, ``--graph GRAPH.toml`` starts one for the command, otherwise the command
is queued in the inbox for the next runtime that opens the log. See ``docs/cli.md``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import click
import structlog
from rich.text import Text

from actors import (
    JOB_RUN,
    KINDS,
    PARTITION,
    POLICIES,
    WANT,
    CollisionPolicy,
    InvalidRef,
    Machine,
    PartitionStatus,
    WantState,
    WantStatus,
    World,
    check_log,
    rebuild,
    validate_refs,
)
from eventlog import REGISTRY, Record, WantbuildError
from supervisor import Graph, Runtime, UnknownEntity, load_graph, open_runtime
from supervisor import explain as explain_ref

from . import __version__
from ._access import (
    CliError,
    Db,
    DbParam,
    load_world,
    parse_until,
    reader,
    require_log,
    runtime_active,
    submit,
)
from ._build import Session, print_outcome, print_recovery, recovery_dict, root_ok, show_progress, until_signal
from ._example import example_graph, week_dates
from ._output import (
    console,
    dumps,
    event_line,
    events_table,
    explanation_text,
    fmt_time,
    partitions_table,
    print_summary,
    record_dict,
    runs_table,
    short,
    status_text,
    wants_table,
    world_summary,
)

T = TypeVar("T")

DIAGRAMS: dict[str, Machine[Any]] = {"want": WANT, "partition": PARTITION, "jobrun": JOB_RUN}
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


# -- the group: one-line errors, logging ------------------------------------------------------------------


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.strip().splitlines() if part.strip())


def _error(message: str) -> None:
    click.echo(f"Error: {_one_line(message)}", err=True)


class WantbuildGroup(click.Group):
    """The top group: turns every error into one line on stderr and an exit code, whoever calls ``main``."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> int:
        saved = structlog.get_config()
        try:
            code = self._main(args, prog_name, complete_var, **extra)
        finally:  # leave the process as we found it (tests run many commands in one process)
            structlog.configure(**saved)
            _set_verbosity(0)
        if standalone_mode:
            sys.exit(code)
        return code

    def _main(self, args: Sequence[str] | None, prog_name: str | None, complete_var: str | None,
              **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name or "wantbuild", complete_var, standalone_mode=False, **extra)
        except BaseException as e:
            return _exit_code_for(_unwrap(e))
        return rv if isinstance(rv, int) else 0


def _unwrap(e: BaseException) -> BaseException:
    """The one error inside nested exception groups.

    ``open_runtime`` re-raises a single error from its body as itself; this guard keeps any other task group
    (a command's own, or a future one) from turning a WantbuildError into a traceback instead of one line."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _exit_code_for(e: BaseException) -> int:
    """Report ``e`` as one line on stderr; return the exit code."""
    if isinstance(e, click.UsageError):
        where = e.ctx.command_path if e.ctx is not None else "wantbuild"
        _error(f"{e.format_message()} (see '{where} --help')")
        return 2
    if isinstance(e, click.ClickException):
        _error(e.format_message())
        return e.exit_code
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.Abort | KeyboardInterrupt):
        _error("interrupted")
        return 130
    if isinstance(e, WantbuildError):
        _error(str(e))
        return 1
    if isinstance(e, OSError):
        _error(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}")
        return 1
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 1
    if not isinstance(e, Exception):
        raise e
    if _verbosity() >= 2:  # a bug of ours: one line; the traceback with -vv
        traceback.print_exception(e)
    _error(f"internal error: {type(e).__name__}: {e} (run with -vv for the traceback, and please report it)")
    return 1


_VERBOSITY = 0
"""-v count of the command running, for the error handler (which runs after its context is gone)."""


def _verbosity() -> int:
    return _VERBOSITY


def _set_verbosity(verbosity: int) -> None:
    global _VERBOSITY
    _VERBOSITY = verbosity


class _StderrLogger:
    """structlog's output: whatever ``sys.stderr`` is at the time of the call (tests swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = msg


def _drop_traceback(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Below -vv a log line says what happened; the traceback (a job's own exception, mostly) stays out."""
    event.pop("exc_info", None)
    event.pop("exception", None)
    return event


def configure_logging(verbosity: int) -> None:
    """structlog to stderr: warnings and errors only by default, ``-v`` info, ``-vv`` debug."""
    _set_verbosity(verbosity)
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            *([] if verbosity >= 2 else [_drop_traceback]),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                          exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


# -- shared options ------------------------------------------------------------------------------------


def _refs_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    if not value:
        return ()
    try:
        return validate_refs(list(value))
    except InvalidRef as e:
        raise click.BadParameter(str(e)) from None


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db", type=DbParam(), default="wantbuild.db", show_default=True, envvar="WANTBUILD_DB",
        help="The event log: a SQLite file, or a postgresql://user:password@host/database[?schema=NAME] URL. "
             "Env: WANTBUILD_DB.",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables (for scripts).")(fn)


def graph_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--graph", "graph_path", type=click.Path(dir_okay=False, path_type=Path), help=help_text)


def policy_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--policy", type=click.Choice(POLICIES), default="shrink", show_default=True,
        help="Collision policy for jobs that set none (in the job or the graph's [graph] table).",
    )(fn)


def emit_json(obj: Any) -> None:
    click.echo(dumps(obj))


# -- the group --------------------------------------------------------------------------------------------


@click.group(cls=WantbuildGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v: what the runtime does, -vv: debug).")
@click.version_option(__version__, "-V", "--version", prog_name="wantbuild")
def cli(verbose: int) -> None:
    """wantbuild: orchestrated state machines for partitioned data builds, on an append-only SQLite event log.

    Start with `wantbuild demo`, then `wantbuild status`, `wantbuild explain REF`, `wantbuild replay
    wantbuild.db --verify`. Every read command takes --json. Docs: docs/cli.md.
    """
    configure_logging(verbose)


# -- building: demo, run, restart ------------------------------------------------------------------------


async def build(db: Db, graph: Graph, *, refs: Sequence[str] = (), policy: str = "shrink", serve: bool = False,
                as_json: bool = False, show_recovery: bool = False, accept_graph_change: bool = False,
                ttl: float | None = None, sla: float | None = None, comment: str = "",
                then: Callable[[Runtime], Awaitable[None]] | None = None) -> int:
    """Open a runtime on ``db``, want ``refs`` (if any), call ``then(rt)``, and run until the want (without refs:
    every want, and every queued command) is terminal, with a progress display; with ``serve``, keep serving the
    inbox until SIGINT/SIGTERM instead. Prints the outcome; returns the exit code."""
    out, err = console(), console(stderr=True)
    stopped_by: int | None = None
    async with open_runtime(db, graph, policy=cast(CollisionPolicy, policy), tune_gc=True,
                            accept_graph_change=accept_graph_change) as rt:
        session = Session.begin(rt)
        if show_recovery and not as_json:
            print_recovery(out, rt)
        already_live = bool(refs) and all(rt.get_partition(r).status is PartitionStatus.LIVE for r in refs)
        handle = await rt.want(refs, ttl=ttl, sla=sla, comment=comment, source="cli") if refs else None
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
            stopped_by = await until_signal(None)
        else:
            stopped_by = await until_signal(lambda: show_progress(session, wait, err))
        outcome = session.outcome()
    result: dict[str, Any] = {"ok": root_ok(outcome), "already_live": already_live, **outcome}
    if show_recovery:
        result["recovery"] = recovery_dict(rt)
    if stopped_by is not None:
        result["stopped_by"] = signal.Signals(stopped_by).name
    if as_json:
        emit_json(result)
    else:
        if already_live:
            out.print(f"Everything asked for was already Live in {db}: the want succeeded at once, no job ran.")
        print_outcome(out, outcome)
    if stopped_by is not None and not serve:
        _error(f"interrupted by {signal.Signals(stopped_by).name}: the runtime stopped cleanly (runs in flight were "
               f"canceled); resume with `wantbuild run GRAPH.toml --db {db}`")
        return EXIT_SIGNAL.get(signal.Signals(stopped_by), 1)
    if not result["ok"]:
        bad = [w for w in outcome["wants"] if w.status is not WantStatus.SUCCESSFUL]
        if bad and not serve:
            w = bad[0]
            _error(f"{len(bad)} want(s) did not succeed: {w.want_id} is {w.status}"
                   f"{f' ({w.reason})' if w.reason else ''}; see `wantbuild explain {w.refs[0]} --db {db}`")
            return 1
    return 0


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


@cli.command(short_help="Build the bundled example: a week of dailies and a weekly report.")
@click.option("--db", type=DbParam(), default="wantbuild.db", show_default=True,
              help="Where to write the event log (a SQLite file or a postgresql:// URL).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default="wantbuild-data",
              show_default=True, help="Where the example jobs write their files.")
@json_option
def demo(db: Db, data_dir: Path, as_json: bool) -> int:
    """Build the bundled example graph: a week of daily partitions and a weekly report.

    raw/{date} -> clean/{date} (a flaky job: some first attempts fail and are retried) -> daily/{date} ->
    weekly/{week}. One want for the weekly report; the jobs discover their inputs as missing dependencies and the
    supervisor creates derived wants for them. Running it again finds everything Live already.
    """
    graph = example_graph(data_dir)
    weekly = f"weekly/{week_dates()[0]}"
    code = run_async(lambda: build(db, graph, refs=(weekly,), as_json=as_json, comment="wantbuild demo"))
    if not as_json and code == 0:
        flag = "" if str(db) == "wantbuild.db" else f" --db {db}"
        console().print(Text(f"\nNext: `wantbuild status{flag}`, `wantbuild explain {weekly}{flag}`, "
                             f"`wantbuild events{flag} --type JobRunFailed`, `wantbuild replay {db} --verify`",
                             style="dim"))
    return code


@cli.command(short_help="Build wants with a graph file; --serve keeps serving.")
@click.argument("graph_file", metavar="GRAPH.toml", type=click.Path(path_type=Path))
@click.option("--want", "refs", multiple=True, callback=_refs_callback, metavar="REF",
              help="A partition to build (repeat for more; together they form one want).")
@db_option
@click.option("--serve", is_flag=True, help="Keep running and serve the command inbox until SIGINT/SIGTERM.")
@policy_option
@click.option("--accept-graph-change", is_flag=True,
              help="Open a log written for a different graph (its fingerprint is updated).")
@json_option
def run(graph_file: Path, refs: tuple[str, ...], db: Db, serve: bool, policy: str, accept_graph_change: bool,
        as_json: bool) -> int:
    """Run GRAPH.toml on the log: build the --want partitions, then stop (or keep serving with --serve).

    Without --want and --serve it finishes the wants already in the log. Exit code 0 when every want it waited
    for is Successful, 1 otherwise.
    """
    graph = load_graph(graph_file)
    return run_async(lambda: build(db, graph, refs=refs, policy=policy, serve=serve, as_json=as_json,
                                   accept_graph_change=accept_graph_change, comment="wantbuild run"))


@cli.command(short_help="Resume a crashed runtime: report Lost runs, then finish.")
@click.argument("db", type=DbParam())
@click.argument("graph_file", metavar="GRAPH.toml", type=click.Path(path_type=Path))
@policy_option
@click.option("--accept-graph-change", is_flag=True,
              help="Resume a log written for a different graph (its fingerprint is updated).")
@json_option
def restart(db: Db, graph_file: Path, policy: str, accept_graph_change: bool, as_json: bool) -> int:
    """Resume a crashed runtime on DB: report what it recovered (Lost runs, re-queued partitions), then run every
    active want to completion."""
    require_log(db)
    if run_async(lambda: runtime_active(db)):
        raise CliError(f"a runtime is running on {db}; restart is for a log whose runtime died (stop it first, "
                       "or talk to it with `wantbuild status` / `wantbuild want ...`)")
    graph = load_graph(graph_file)
    return run_async(lambda: build(db, graph, policy=policy, as_json=as_json, show_recovery=True,
                                   accept_graph_change=accept_graph_change))


# -- wants, taints: through the inbox, a runtime of our own, or queued ------------------------------------


@cli.group()
def want() -> None:
    """Create, list, show and cancel wants."""


async def change(db: Db, graph_path: Path | None, name: str, payload: dict[str, Any], *, timeout: float,
                 as_json: bool, describe: Callable[[dict[str, Any]], str],
                 apply: Callable[[Runtime], Awaitable[dict[str, Any]]] | None = None,
                 quiet: bool = False) -> tuple[int, dict[str, Any]]:
    """Apply a change to the log: via the running runtime's inbox, via a runtime of our own (``--graph``, then
    run until every want is terminal), or queued in the inbox for the next runtime. Returns (exit code, result)."""
    out, err = console(), console(stderr=True)
    if await runtime_active(db):
        command_id, answer = await submit(db, name, payload, timeout)
        if answer is None:
            raise CliError(f"submitted as command {command_id}, but the runtime on {db} did not answer within "
                           f"{timeout:g} s; it applies the command when it gets to it (check `wantbuild status`)")
        if not answer.get("ok"):
            raise CliError(str(answer.get("error", "the runtime refused the command")))
        result = {**answer, "via": "inbox", "command_id": command_id}
        if as_json and not quiet:
            emit_json(result)
        elif not quiet:
            out.print(describe(result))
        return 0, result
    if graph_path is not None and apply is not None:
        graph = load_graph(graph_path)
        results: list[dict[str, Any]] = []

        async def then(rt: Runtime) -> None:
            results.append({**(await apply(rt)), "via": "runtime"})
            if not as_json:
                out.print(describe(results[0]))

        code = await build(db, graph, as_json=as_json, then=then)
        return code, results[0] if results else {"ok": False}
    command_id, _ = await submit(db, name, payload, 0)
    result = {"ok": True, "via": "queued", "command_id": command_id}
    if as_json:
        emit_json(result)
    else:
        err.print(f"No runtime is running on {db}: queued as command {command_id}; it is applied when a runtime "
                  f"next opens the log (`wantbuild run GRAPH.toml --db {db}`). Pass --graph GRAPH.toml to apply "
                  "it now.")
    return 0, result


@want.command("create", short_help="Want partitions built.")
@click.argument("refs", nargs=-1, required=True, callback=_refs_callback, metavar="REF...")
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
            graph = load_graph(graph_path)
            return await build(db, graph, refs=refs, ttl=ttl, sla=sla, comment=comment, as_json=as_json)
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


@cli.command(short_help="Mark Live partitions Tainted (do not read).")
@click.argument("refs", nargs=-1, required=True, callback=_refs_callback, metavar="REF...")
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


# -- queries ---------------------------------------------------------------------------------------------


@cli.command(short_help="Entities per status, active wants, runs in flight.")
@db_option
@json_option
def status(db: Db, as_json: bool) -> None:
    """What the log holds now: entities per status, active wants, runs in flight, failures."""
    world = run_async(lambda: load_world(db))
    summary = world_summary(world)
    running = run_async(lambda: runtime_active(db))
    if as_json:
        emit_json({"db": str(db), "runtime_running": running, **summary})
        return
    out = console()
    state = "a runtime is running on it" if running else "no runtime is running on it"
    print_summary(out, world, summary, heading=f"{db}: {summary['last_seq']} events, {state}")


@cli.command(short_help="Why a partition is not Live yet, as a chain.")
@click.argument("ref")
@graph_option("The graph file, to name the job that builds REF and its concurrency (optional).")
@db_option
@json_option
def explain(ref: str, graph_path: Path | None, db: Db, as_json: bool) -> None:
    """Why partition REF is not Live yet (or how it became Live), as a chain through its upstream partitions."""
    try:
        ref = validate_refs([ref])[0]
    except InvalidRef as e:
        raise click.BadParameter(str(e), param_hint="REF") from None
    graph = load_graph(graph_path) if graph_path is not None else None

    async def main() -> Any:
        world = await load_world(db)
        return await explain_ref(world, graph, ref)

    ex = run_async(main)
    if as_json:
        emit_json(ex.to_dict())
    else:
        console().print(explanation_text(ex), end="")


def _type_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    known = sorted({cls.event_name for cls in REGISTRY.all()})
    for t in value:
        if t not in known:
            close = difflib.get_close_matches(t, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise click.BadParameter(f"unknown event type {t!r}; {hint}known: {', '.join(known)}")
    return tuple(value)


@cli.command(short_help="Committed events, filtered; --follow for new ones.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they commit (Ctrl-C stops).")
@click.option("--entity", "entity_id", metavar="ID", help="Only this entity's events (a want id, a ref, a run id).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only this entity kind (repeatable).")
@click.option("--type", "types", multiple=True, callback=_type_callback, metavar="TYPE",
              help="Only this event type, e.g. WantCreated (repeatable).")
@click.option("--from-seq", type=click.IntRange(min=1), help="Start at this seq (default: the first event; with "
              "--follow: the next new one).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many events.")
@db_option
@json_option
def events(follow: bool, entity_id: str | None, kinds: tuple[str, ...], types: tuple[str, ...], from_seq: int | None,
           limit: int | None, db: Db, as_json: bool) -> int:
    """Print committed events, filtered; --json prints one JSON object per line."""
    out = console()

    async def read_all() -> list[Record]:
        got: list[Record] = []
        async with reader(db) as log:
            async for rec in log.read(from_seq or 1, kinds=kinds or None, entity_id=entity_id, types=types or None):
                got.append(rec)
                if limit is not None and len(got) >= limit:
                    break
        return got

    async def follow_live() -> None:
        n = 0
        async with reader(db) as log:
            start = from_seq if from_seq is not None else log.last_seq + 1
            async for rec in log.follow(start, kinds=kinds or None, entity_id=entity_id, types=types or None):
                if as_json:
                    click.echo(dumps(rec, indent=False))
                else:
                    out.print(event_line(rec))
                n += 1
                if limit is not None and n >= limit:
                    return

    if follow:
        run_async(lambda: until_signal(follow_live))
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


@cli.command(short_help="The state at any point; --verify checks invariants.")
@click.argument("db", type=DbParam())
@click.option("--until", metavar="SEQ|TIME",
              help="Stop at this seq (an integer) or time (seconds like 1762070400.5, or ISO 2026-11-02T10:15).")
@click.option("--verify", is_flag=True, help="Check the log's structure and invariants I1, I2, I6 (and I5 with "
              "--expect-terminal); exit 1 naming the first offending seq.")
@click.option("--expect-terminal", is_flag=True, help="With --verify: every want must be terminal (I5).")
@json_option
def replay(db: Db, until: str | None, verify: bool, expect_terminal: bool, as_json: bool) -> int:
    """Rebuild the state recorded in DB (at any point with --until) and print a summary."""
    until_seq, until_time = parse_until(until) if until is not None else (None, None)

    async def main() -> tuple[Any, list[Any], list[str]]:
        async with reader(db) as log:
            if not verify:
                return await rebuild(log, until_seq=until_seq, until_time=until_time), [], []
            report = await log.verify()
            problems = [str(p) for p in report.problems]
            seq = until_seq
            if until_time is not None:
                seq = (await rebuild(log, until_time=until_time)).last_seq
            world, violations = await check_log(log, expect_all_terminal=expect_terminal, until_seq=seq)
            return world, violations, problems

    world, violations, problems = run_async(main)
    summary = world_summary(world)
    at = f"seq {world.last_seq}" + (f" ({fmt_time(world.last_at)})" if world.last_seq else "")
    if as_json:
        doc: dict[str, Any] = {"db": str(db), "until": until, **summary}
        if verify:
            doc["verify"] = {"ok": not violations and not problems, "problems": problems,
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
                checked = "I1, I2, I5, I6" if expect_terminal else "I1, I2, I6"
                out.print(Text(f"invariants {checked}: ok", style="green"))
    if violations:
        first = min(violations, key=lambda v: (v.seq is None, v.seq or 0))
        where = f"seq {first.seq}" if first.seq is not None else "the end of the log"
        _error(f"invariant {first.invariant} violated at {where}: {first.message} "
               f"(see `wantbuild events --db {db} --from-seq {first.seq or 1}`)")
        return 1
    if problems:
        _error(f"{db} is damaged: {problems[0]}")
        return 1
    return 0


@cli.command(short_help="Mermaid state diagram of want, partition or jobrun.")
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


# -- scenarios (another package; mounted when present) -----------------------------------------------------


def _mount_scenarios() -> None:
    try:
        module = importlib.import_module("scenarios._cli")
    except ModuleNotFoundError as e:
        if e.name in ("scenarios", "scenarios._cli"):
            return  # not written yet: no scenario command
        error = f"{type(e).__name__}: {e}"
    except Exception as e:  # their bug must not take the whole CLI down
        error = f"{type(e).__name__}: {e}"
    else:
        command = getattr(module, "scenario", None)
        if isinstance(command, click.Command):
            cli.add_command(command, "scenario")
        return

    @cli.command("scenario", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def broken() -> None:
        """(unavailable: the scenario commands failed to load)"""
        raise CliError(f"the scenario commands failed to load ({error}); run `python -c 'import scenarios._cli'` "
                       "to see why")


_mount_scenarios()


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: returns the exit code."""
    return cli.main(args=argv, prog_name="wantbuild", standalone_mode=False)
