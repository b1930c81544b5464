"""The ``wantbuild`` group itself: one-line errors and exit codes, logging set-up, and what commands share.

Every command module imports its helpers from here (``run_async``, the ``--db``/``--json``/``--graph``/``--policy``
options, ``emit_json``, ``error``); ``wantbuild._cli`` registers the commands on :data:`cli`.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import structlog

from actors import POLICIES, InvalidRef, validate_refs
from eventlog import WantbuildError
from supervisor import sole_error

from .. import __version__
from .._access import DbParam
from .._output import dumps

T = TypeVar("T")

# -- the group: one-line errors, logging ------------------------------------------------------------------


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.strip().splitlines() if part.strip())


def error(message: str) -> None:
    """Report ``message`` as one line on stderr: ``Error: ...``."""
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
            return _exit_code_for(sole_error(e) or e)
        return rv if isinstance(rv, int) else 0


def _exit_code_for(e: BaseException) -> int:
    """Report ``e`` as one line on stderr; return the exit code."""
    if isinstance(e, click.UsageError):
        where = e.ctx.command_path if e.ctx is not None else "wantbuild"
        error(f"{e.format_message()} (see '{where} --help')")
        return 2
    if isinstance(e, click.ClickException):
        error(e.format_message())
        return e.exit_code
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.Abort | KeyboardInterrupt):
        error("interrupted")
        return 130
    if isinstance(e, WantbuildError):
        error(str(e))
        return 1
    if isinstance(e, OSError):
        error(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}")
        return 1
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 1
    if not isinstance(e, Exception):
        raise e
    if _verbosity() >= 2:  # a bug of ours: one line; the traceback with -vv
        traceback.print_exception(e)
    error(f"internal error: {type(e).__name__}: {e} (run with -vv for the traceback, and please report it)")
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


def refs_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
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


def durability_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--durability", type=click.Choice(["process", "power"]), default=None,
        help="What a commit survives: any death of the process, or a power loss too (a disk flush per group "
             "commit; docs/eventlog.md). Default: process for a SQLite file, power for a PostgreSQL log.",
    )(fn)


def emit_json(obj: Any) -> None:
    click.echo(dumps(obj))



@click.group(cls=WantbuildGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v: what the runtime does, -vv: debug).")
@click.version_option(__version__, "-V", "--version", prog_name="wantbuild")
def cli(verbose: int) -> None:
    """wantbuild: orchestrated state machines for partitioned data builds, on an append-only SQLite event log.

    Start with `wantbuild demo`, then `wantbuild status`, `wantbuild explain REF`, `wantbuild replay
    wantbuild.db --verify`. Every read command takes --json. Docs: docs/cli.md.
    """
    configure_logging(verbose)

