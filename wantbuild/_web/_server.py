"""``wantbuild ui``: serve the web view of a log with uvicorn, on loopback unless told otherwise."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import anyio
import uvicorn

from ._app import create_app

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_token(env_token: str | None) -> tuple[str, bool]:
    """The write token: ``WANTBUILD_UI_TOKEN`` if set, else a fresh random one. ``(token, generated)``."""
    if env_token:
        return env_token, False
    return secrets.token_urlsafe(24), True


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``serve`` stops it (and exits 0) on SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0: any free one); OSError names the problem."""
    family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}/"


async def serve(db: str, *, host: str, port: int, allow_writes: bool, token: str | None,
                on_ready: Callable[[str], None], stop: Callable[[], AbstractContextManager[anyio.CancelScope]],
                poll_interval: float = 0.25) -> None:
    """Serve until ``stop()``'s scope is cancelled (the CLI's SIGINT/SIGTERM), then shut down cleanly (open
    streams end, requests in flight finish); ``on_ready(url)`` once the socket listens."""
    trusted = [*LOOPBACK_NAMES, host] if is_loopback(host) else None
    app = create_app(db, allow_writes=allow_writes, token=token, trusted_hosts=trusted, poll_interval=poll_interval,
                     tune_gc=True)
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_config=None, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=3, server_header=False, proxy_headers=False)
    sock = bind(host, port)
    actual_port = int(sock.getsockname()[1])
    server = _Server(config)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            try:
                await server.serve(sockets=[sock])
            finally:
                tg.cancel_scope.cancel()

        async def watch() -> None:
            with stop():
                await anyio.sleep_forever()
            app.state.wantbuild.closing = True
            app.state.wantbuild.obs.close()
            server.should_exit = True

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await anyio.sleep(0.01)
            on_ready(url_for(host, actual_port))

        tg.start_soon(watch)
        tg.start_soon(announce)
        tg.start_soon(run)
    sock.close()
