"""Shared by the web view's tests: a real uvicorn server on 127.0.0.1 for an app, demo logs, OpenAPI checks."""

from __future__ import annotations

import functools
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import uvicorn
from starlette.applications import Starlette

from wantbuild._cli import main as cli_main
from wantbuild._web._openapi import openapi_schema
from wantbuild._web._server import _Server

DEMO_WEEKLY = "weekly/2026-11-02"


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` served by uvicorn on 127.0.0.1 (a free port), its lifespan run; a client pointed at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=2))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn only sets a flag
                await anyio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
                yield client
        finally:
            app.state.wantbuild.closing = True
            app.state.wantbuild.obs.close()
            server.should_exit = True
    sock.close()


async def wait_ready(client: httpx.AsyncClient, timeout: float = 20) -> dict[str, Any]:
    """Poll ``/api/health`` until the log is loaded (or failed); its last answer."""
    with anyio.fail_after(timeout):
        while True:
            health: dict[str, Any] = (await client.get("/api/health")).json()
            if health["phase"] in ("ready", "failed"):
                return health
            await anyio.sleep(0.02)


def make_demo(path: Path) -> Path:
    """A log made by ``wantbuild demo`` at ``path`` (its data next to it)."""
    code = cli_main(["demo", "--db", str(path), "--data", str(path.parent / "data"), "--json"])
    assert code == 0
    return path


def copy_log(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


@functools.cache
def spec() -> dict[str, Any]:
    return openapi_schema()


def check_schema(path: str, method: str, status: int, body: Any) -> None:
    """``body`` conforms to what the OpenAPI document says ``method path`` answers with ``status``."""
    doc = spec()
    op = doc["paths"][path][method.lower()]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method} {path} answered {status}, which the document does not list"
    schema = response["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)
