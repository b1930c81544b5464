"""The ``wantbuild`` command line: click parses, rich draws.

The CLI owns the terminal: results go to stdout (tables, or JSON with ``--json``), progress, notes and errors to
stderr, and library logs (structlog) to stderr too, quiet unless ``-v``. Every user error is one line on stderr
(``Error: what is wrong; how to fix it``) with exit code 2 for usage errors and 1 for failures; never a
traceback (an internal error shows one only with ``-vv``).

Queries read the log directly (read-only; safe while a runtime runs). Changes go through the running runtime's
command inbox; with no runtime running, ``--graph GRAPH.toml`` starts one for the command, otherwise the command
is queued in the inbox for the next runtime that opens the log. See ``docs/cli.md``.

One module per command group; :mod:`.app` holds the group, error handling, logging and the shared options. To add
a command group, write its module (a ``click.group`` using the helpers of :mod:`.app`) and register it below with
one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from .app import cli
from .lineage import lineage_command
from .publish import publish_command
from .query import DIAGRAMS, diagram, events, explain, replay, status
from .run import demo, restart, run
from .runs import runs
from .scenario import scenario_command
from .schedule import schedule
from .snapshot import compact_command, snapshot
from .taint import taint
from .ui import ui
from .want import want

__all__ = ["DIAGRAMS", "cli", "main"]

# -- the commands: one line each ---------------------------------------------------------------------------
cli.add_command(demo)
cli.add_command(run)
cli.add_command(restart)
cli.add_command(want)
cli.add_command(taint)
cli.add_command(status)
cli.add_command(explain)
cli.add_command(events)
cli.add_command(replay)
cli.add_command(diagram)
cli.add_command(publish_command)
cli.add_command(schedule)
cli.add_command(ui)
cli.add_command(snapshot)
cli.add_command(compact_command, "compact")
cli.add_command(lineage_command)
cli.add_command(runs)
if (_scenario := scenario_command()) is not None:
    cli.add_command(_scenario, "scenario")


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: returns the exit code."""
    return cli.main(args=argv, prog_name="wantbuild", standalone_mode=False)
