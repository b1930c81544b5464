"""``wantbuild ui``: the web view and HTTP API of a log (needs the ``web`` extra).

Importing this module costs nothing: the web stack is imported when the command runs, so a wantbuild installed
without ``[web]`` still has every other command, and ``ui`` says how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.text import Text

from .._access import CliError
from .._output import console
from .._signals import Interrupts
from .._web._source import display_name


@click.command("ui", short_help="The web view and HTTP API of a log, live.")
@click.option("--db", default="wantbuild.db", show_default=True, envvar="WANTBUILD_DB",
              help="The event log (SQLite file). Env: WANTBUILD_DB.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback is reachable from other machines (a warning says so).")
@click.option("--port", type=click.IntRange(0, 65535), default=8470, show_default=True,
              help="Port to listen on (0: any free port; the URL printed says which).")
@click.option("--allow-writes", is_flag=True,
              help="Allow creating and canceling wants and tainting, with a token (WANTBUILD_UI_TOKEN, or one "
                   "generated and printed).")
def ui(db: str, host: str, port: int, allow_writes: bool) -> int:
    """Serve a live web view and JSON API of the log at --db on http://127.0.0.1:8470/.

    It reads the log (whether or not a runtime is running on it) and follows it as it grows: pages update
    without a reload. With --allow-writes, wants can be created and canceled and partitions tainted through the
    log's command inbox (a running runtime applies them), with the token. Stop with Ctrl-C. See docs/web.md.
    """
    try:
        from .._web._server import is_loopback, make_token, serve
    except ModuleNotFoundError as e:
        raise CliError(f"the web view needs the web extra ({e.name} is not installed): "
                       "pip install 'wantbuild[web]'") from None
    import anyio

    if "://" not in db:
        path = Path(db)
        if not path.exists():
            raise CliError(f"no log at {db}: create one with `wantbuild demo` or `wantbuild run GRAPH.toml --db {db}`,"
                           " or point --db at an existing log")
        if path.is_dir():
            raise CliError(f"{db} is a folder, not a wantbuild log; give the path of the .db file")
    err = console(stderr=True)
    token, generated = make_token(os.environ.get("WANTBUILD_UI_TOKEN")) if allow_writes else (None, False)
    if not is_loopback(host):
        err.print(Text(f"Warning: listening on {host}, which is not a loopback address: anyone who can reach this "
                       "machine can read the log" + (" (and change it with the token)" if allow_writes else "")
                       + "; the connection is not encrypted.", style="bold yellow"))

    def ready(url: str) -> None:
        click.echo(url)
        err.print(f"Serving the web view of {display_name(db)} at {url} (the HTTP API is under {url}api/; "
                  "stop with Ctrl-C)")
        if allow_writes:
            if generated:
                err.print(f"Writes are on. Token: {token}  (sign a browser in: {url}login?token={token}; "
                          "set WANTBUILD_UI_TOKEN to choose it)")
            else:
                err.print(f"Writes are on, with the token in WANTBUILD_UI_TOKEN (sign in at {url}login)")

    try:
        with Interrupts(announce=False) as interrupts:
            anyio.run(lambda: serve(db, host=host, port=port, allow_writes=allow_writes, token=token, on_ready=ready,
                                    stop=interrupts.stoppable))
    except OSError as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}"
                       + ("; pick another --port (0: any free one)" if port else "")) from None
    return 0
