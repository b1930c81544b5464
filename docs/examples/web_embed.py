"""The web view mounted on a runtime of your own program (docs/web.md, "Embedding"; a test runs it).

    python docs/examples/web_embed.py [FOLDER]

It opens a runtime on ``FOLDER/web.db`` (default: a new temporary folder), serves its web view with uvicorn on
127.0.0.1 (a free port), builds a want, reads the state back through the HTTP API, and stops.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import uvicorn

import wantbuild

graph = wantbuild.Graph("web-example")
built: set[str] = set()


@graph.job("raw", outputs="raw/{date}")
async def raw(ctx: wantbuild.JobContext) -> None:
    built.update(ctx.partitions)


@graph.job("daily", outputs="daily/{date}")
async def daily(ctx: wantbuild.JobContext) -> None:
    missing = [f"raw/{p['date']}" for p in ctx.params if f"raw/{p['date']}" not in built]
    if missing:
        raise wantbuild.MissingDeps(missing)  # the supervisor builds them first, then runs daily again


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


async def main(folder: Path) -> None:
    async with wantbuild.open(folder / "web.db", graph) as rt:
        app = wantbuild.web_app(rt)  # the runtime's own World, live: nothing is replayed
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:  # noqa: ASYNC110 - uvicorn only sets a flag
                await anyio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            print(f"web view on http://127.0.0.1:{port}/")

            handle = await rt.want(["daily/2026-11-02"])
            print(f"want {handle.want_id}: {(await handle.done()).status}")
            status = await anyio.to_thread.run_sync(get_json, f"http://127.0.0.1:{port}/api/status")
            print(f"wants per status: { {s: n for s, n in status['counts']['want'].items() if n} }")
            lineage = await anyio.to_thread.run_sync(
                get_json, f"http://127.0.0.1:{port}/api/partitions/daily/2026-11-02")
            print(f"lineage: {[(e['upstream'], e['downstream']) for e in lineage['lineage']['edges']]}")
            server.should_exit = True


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="wantbuild-web-"))
    out.mkdir(parents=True, exist_ok=True)
    anyio.run(main, out)
