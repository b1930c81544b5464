"""The ASGI app: pages, the JSON API, the streams, writes through the command inbox.

Built on Starlette (routing, requests, streaming) and served by uvicorn; templates are Jinja2. Every endpoint
is one function that builds plain data (``_data``); the page and the API render the same data, so they agree.
Errors are answers, never tracebacks: a malformed ref or parameter is a 400 with the reason, an unknown id a
404 that says what was asked, a write without the token a 401, a log that cannot be read a 500 that says
why; anything unexpected is logged and answered with a 500 page.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors import KINDS, MACHINES, NeverBuilt
from actors import lineage as lineage_of
from eventlog import REGISTRY, WantbuildError
from supervisor import explain

from ._common import (
    TOKEN_COOKIE,
    HttpProblem,
    WebState,
    authorize_write,
    base,
    get_ref,
    list_params,
    ref_path,
    require_ready,
    web,
)
from ._data import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    BadQuery,
    events_page,
    int_param,
    overview,
    partition_detail,
    partitions_list,
    record_dict,
    run_detail,
    runs_list,
    want_detail,
    wants_list,
)
from ._observer import Observer
from ._openapi import openapi_schema
from ._render import ENV, render, url_helpers
from ._source import open_reader
from ._static import StaticFiles
from ._stream import stream_response
from ._writes import cancel_command, command_dict, submit, taint_command, want_command

log = structlog.get_logger("wantbuild.web")

DIAGRAM_KINDS = {"want": "want", "partition": "partition", "jobrun": "job_run"}
MAX_BODY = 4 * 1024 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


# -- answers -------------------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json", headers=headers)


def _problem_json(p: HttpProblem) -> Response:
    body: dict[str, Any] = {"error": p.message, "status": p.status}
    if p.title:
        body["title"] = p.title
    if p.asked:
        body["asked"] = p.asked
    return _json(body, p.status, p.headers)


def _problem_page(request: Request, p: HttpProblem) -> Response:
    if "part" in request.query_params:  # a live region's refresh: htmx keeps the region as it was
        return Response(f"{p.status} {p.title}: {p.message}", status_code=p.status, media_type="text/plain",
                        headers=p.headers)
    try:
        if p.status == 503 and p.title == "Loading":
            return render(request, "loading.html", {"problem": p}, status=503, headers=p.headers)
        return render(request, "error.html", {"problem": p}, status=p.status, headers=p.headers)
    except Exception:  # the error page itself failed: plain text, still no traceback
        log.exception("web view error page failed")
        return Response(f"{p.status} {p.title}: {p.message}", status_code=p.status, media_type="text/plain")


def page(fn: Callable[[Request], Awaitable[Response]]) -> Endpoint:
    """An HTML endpoint: problems become error pages; anything unexpected a logged 500 page."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except HttpProblem as p:
            return _problem_page(request, p)
        except Exception as e:
            log.exception("web view page failed", path=request.url.path)
            return _problem_page(request, HttpProblem(500, f"{type(e).__name__}: {e} (the server logged it)",
                                                      title="Internal error"))

    return endpoint


def api(fn: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """A JSON endpoint returning data (or a ready Response): problems become ``{"error": ...}`` answers."""

    async def endpoint(request: Request) -> Response:
        try:
            out = await fn(request)
        except HttpProblem as p:
            return _problem_json(p)
        except Exception as e:
            log.exception("web view API failed", path=request.url.path)
            return _problem_json(HttpProblem(500, f"{type(e).__name__}: {e} (the server logged it)",
                                             title="Internal error"))
        return out if isinstance(out, Response) else _json(out)

    return endpoint


def _unknown(kind: str, asked: str, db: str, hint: str) -> HttpProblem:
    return HttpProblem(404, f"no {kind} {asked!r} in {db}; {hint}", title=f"Unknown {kind}", asked=asked)


# -- data shared by pages and the API ----------------------------------------------------------------------


async def _status(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    data = overview(obs)
    data["pending_commands"] = await _pending(obs)
    return data


async def _pending(obs: Observer) -> list[dict[str, Any]]:
    if obs.log is None or obs.log.closed:
        return []
    return [command_dict(c) for c in (await obs.log.pending_commands())[:20]]


async def _wants(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    statuses, q, offset, limit = list_params(request, "want")
    active = request.query_params.get("active", "") not in ("", "0", "false")
    return wants_list(obs, statuses=statuses, active=active, q=q, offset=offset, limit=limit)


async def _want(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    want_id = str(request.path_params["want_id"])
    pst, pq, poff, plim = list_params(request, "partition", "p", default_limit=50)
    _, _, roff, rlim = list_params(request, "job_run", "r", default_limit=20)
    data = await want_detail(obs, want_id, pstatuses=pst, pq=pq, poffset=poff, plimit=plim, roffset=roff,
                             rlimit=rlim)
    if data is None:
        raise _unknown("want", want_id, obs.db, "the wants page lists them")
    return data


async def _partitions(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    statuses, q, offset, limit = list_params(request, "partition")
    return partitions_list(obs, statuses=statuses, q=q, offset=offset, limit=limit)


async def _partition(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    ref = get_ref(request)
    _, _, roff, rlim = list_params(request, "job_run", "r", default_limit=20)
    data = await partition_detail(obs, ref, roffset=roff, rlimit=rlim)
    if data is None:
        raise _unknown("partition", ref, obs.db, "no event, want or run mentions it (a want for it would create it)")
    return data


async def _runs(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    statuses, q, offset, limit = list_params(request, "job_run")
    job = request.query_params.get("job", "").strip()
    return runs_list(obs, statuses=statuses, job=job, q=q, offset=offset, limit=limit)


async def _run(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    run_id = str(request.path_params["run_id"])
    _, _, poff, plim = list_params(request, "partition", "p", default_limit=50)
    data = await run_detail(obs, run_id, poffset=poff, plimit=plim)
    if data is None:
        raise _unknown("job run", run_id, obs.db, "the runs page lists them")
    return data


def _event_filters(request: Request) -> tuple[list[str], list[str], str]:
    qp = request.query_params
    kinds = [k for v in qp.getlist("kind") for k in v.split(",") if k]
    types = [t for v in qp.getlist("type") for t in v.split(",") if t]
    bad_kinds = [k for k in kinds if k not in KINDS]
    if bad_kinds:
        raise HttpProblem(400, f"kind={bad_kinds[0]!r} is not an entity kind; known: {', '.join(KINDS)}",
                          title="Bad query parameter")
    known = sorted({cls.event_name for cls in REGISTRY.all()})
    bad_types = [t for t in types if t not in known]
    if bad_types:
        raise HttpProblem(400, f"type={bad_types[0]!r} is not an event type; known: {', '.join(known)}",
                          title="Bad query parameter")
    return kinds, types, qp.get("entity", "").strip()


async def _events(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    kinds, types, entity = _event_filters(request)
    qp = request.query_params
    try:
        before = int_param(qp.get("before_seq"), "before_seq", 0, 1) if qp.get("before_seq") else None
        from_seq = int_param(qp.get("from_seq"), "from_seq", 0, 1) if qp.get("from_seq") else None
        limit = int_param(qp.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    except BadQuery as e:
        raise HttpProblem(400, str(e), title="Bad query parameter") from None
    if before is not None and from_seq is not None:
        raise HttpProblem(400, "give before_seq (newest first) or from_seq (oldest first), not both",
                          title="Bad query parameter")
    data = await events_page(obs, kinds=kinds, types=types, entity=entity, before_seq=before, from_seq=from_seq,
                             limit=limit)
    data["filters"] = {"kind": kinds, "type": types, "entity": entity}
    return data


def _diagram(kind: str) -> dict[str, Any]:
    machine = MACHINES[DIAGRAM_KINDS[kind]]
    return {"kind": machine.kind, "name": kind, "mermaid": machine.mermaid(),
            "terminal": sorted(str(s) for s in machine.terminal),
            "transitions": [{"from": None if a is None else str(a), "to": None if b is None else str(b), "event": n}
                            for a, b, n in machine.edges()]}


# -- pages ---------------------------------------------------------------------------------------------------


def _view(template: str, fn: Callable[[Request], Awaitable[dict[str, Any]]], **extra: Any) -> Endpoint:
    async def view(request: Request) -> Response:
        return render(request, template, {"d": await fn(request), **extra})

    return page(view)


async def _events_view(request: Request) -> Response:
    d = await _events(request)
    return render(request, "events.html", {"d": d, "kinds": KINDS,
                                           "types": sorted({c.event_name for c in REGISTRY.all()})})


async def _diagrams_view(request: Request) -> Response:
    return render(request, "diagrams.html", {"diagrams": [_diagram(k) for k in DIAGRAM_KINDS]})


async def _command_view(request: Request) -> Response:
    obs = require_ready(request)
    cmd = await _command_or_404(request, obs)
    return render(request, "command.html", {"c": command_dict(cmd)})


async def _command_or_404(request: Request, obs: Observer) -> Any:
    raw = str(request.path_params["command_id"])
    if not raw.isdigit():
        raise HttpProblem(400, f"command id {raw!r} is not a number", title="Bad command id", asked=raw)
    cmd = None if obs.log is None or obs.log.closed else await obs.log.command(int(raw))
    if cmd is None:
        raise _unknown("command", raw, obs.db, "commands are numbered from 1 as they are submitted")
    return cmd


async def _not_found(request: Request, exc: Exception) -> Response:
    path = request.url.path.removeprefix(base(request))
    p = HttpProblem(404, f"there is no page {path!r}", title="No such page", asked=path)
    return _problem_json(p) if path.startswith("/api/") else _problem_page(request, p)


# -- writes ---------------------------------------------------------------------------------------------------


async def _body(request: Request, *, api: bool) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise HttpProblem(413, f"the request body is larger than {MAX_BODY} bytes", title="Too large")
    if api:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise HttpProblem(400, f"the body is not JSON: {e}", title="Bad request") from None
        if not isinstance(body, dict):
            raise HttpProblem(400, "the body must be a JSON object", title="Bad request")
        return body
    form: dict[str, Any] = {}
    for k, v in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        form[k] = v
    return form


async def _api_create(request: Request) -> Response:
    authorize_write(request, api=True)
    require_ready(request)
    payload = want_command(await _body(request, api=True))
    status, answer = await submit(web(request), "want", payload)
    return _json(answer, 201 if status == 200 else status)


async def _api_cancel(request: Request) -> Response:
    authorize_write(request, api=True)
    require_ready(request)
    payload = cancel_command(web(request), str(request.path_params["want_id"]), await _body(request, api=True))
    status, answer = await submit(web(request), "cancel", payload)
    return _json(answer, status)


async def _api_taint(request: Request) -> Response:
    authorize_write(request, api=True)
    require_ready(request)
    payload = taint_command(web(request), await _body(request, api=True))
    status, answer = await submit(web(request), "taint", payload)
    return _json(answer, status)


async def _api_command(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    return command_dict(await _command_or_404(request, obs))


async def _form_write(request: Request, name: str) -> Response:
    """A browser form: submit, then show the command's page (or the want it created)."""
    authorize_write(request, api=False)
    require_ready(request)
    st = web(request)
    form = await _body(request, api=False)
    if name == "want":
        payload = want_command(form)
    elif name == "cancel":
        payload = cancel_command(st, str(request.path_params["want_id"]), form)
    else:
        payload = taint_command(st, form)
    status, answer = await submit(st, name, payload)
    b = base(request)
    if status == 200 and name in ("want", "cancel") and answer.get("want_id"):
        return RedirectResponse(f"{b}/wants/{answer['want_id']}", status_code=303)
    if status == 200 and name == "taint":
        return RedirectResponse(f"{b}/partitions/{ref_path(payload['refs'][0])}", status_code=303)
    return RedirectResponse(f"{b}/commands/{answer['command_id']}", status_code=303)


async def _login(request: Request) -> Response:
    st = web(request)
    if request.method == "POST":
        token = (await _body(request, api=False)).get("token", "")
    else:
        token = request.query_params.get("token", "")
    if not token:
        return render(request, "login.html", {"error": ""})
    if not st.allow_writes:
        raise HttpProblem(403, "writes are off: this server takes no token (start it with --allow-writes)",
                          title="Writes are off")
    if not st.check_token(token):
        return render(request, "login.html", {"error": "That is not this server's token."}, status=401)
    resp = RedirectResponse(f"{base(request)}/", status_code=303)
    resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path=f"{base(request)}/")
    return resp


async def _logout(request: Request) -> Response:
    resp = RedirectResponse(f"{base(request)}/", status_code=303)
    resp.delete_cookie(TOKEN_COOKIE, path=f"{base(request)}/")
    return resp


# -- streams --------------------------------------------------------------------------------------------------


def _after(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or ""
    try:
        return int(raw) if raw else web(request).obs.world.last_seq
    except ValueError:
        raise HttpProblem(400, f"after={raw!r} is not a seq", title="Bad query parameter") from None


async def _page_stream(request: Request) -> Response:
    st = web(request)
    after = _after(request)
    kinds, types, entity = _event_filters(request)
    rows = None
    if request.query_params.get("rows"):
        tmpl = ENV.get_template("_rows.html")
        helpers = url_helpers(base(request))

        def rows(records: list[Any], missed: int) -> str:
            return tmpl.render(rows=[record_dict(r) for r in reversed(records)], missed=missed, **helpers)

    if st.obs.phase != "ready":
        after = 0
    return stream_response(request, after=after, kinds=kinds, types=types, entity=entity, rows=rows)


async def _api_stream(request: Request) -> Response:
    require_ready(request)
    kinds, types, entity = _event_filters(request)
    return stream_response(request, after=_after(request), kinds=kinds, types=types, entity=entity, records=True)


# -- middleware ------------------------------------------------------------------------------------------------


SECURITY_HEADERS = [
    # Scripts only from this server (the vendored ones); Mermaid writes <style> into its SVGs, hence inline styles.
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                 b"base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class ServerTiming:
    """Adds ``Server-Timing: app;dur=MS`` (time until the response starts) and the security headers (no framing,
    no foreign scripts) to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message["headers"] = [*message.get("headers", []), (b"server-timing", f"app;dur={ms:.2f}".encode()),
                                      *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, timed)


class HostCheck:
    """Only answer requests addressed to one of ``hosts`` (defeats DNS rebinding against a loopback server)."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = {h.lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = ""
            for k, v in scope.get("headers", []):
                if k == b"host":
                    host = v.decode("latin-1").lower()
                    break
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.hosts:
                msg = f"this server answers only to {', '.join(sorted(self.hosts))}, not {host!r}"
                await JSONResponse({"error": msg, "status": 421}, status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the app ---------------------------------------------------------------------------------------------------


def create_app(source: str | os.PathLike[str] | Any, *, allow_writes: bool = False, token: str | None = None,
               trusted_hosts: list[str] | None = None, poll_interval: float = 0.25,
               command_wait: float = 5.0, tune_gc: bool = False) -> Starlette:
    """The web view of a log (a path: followed from its own reader) or of a live runtime (its World).

    ``allow_writes`` turns on creating and canceling wants and tainting, which then need ``token``.
    ``trusted_hosts`` limits the Host headers answered (the CLI sets it when bound to loopback). ``tune_gc``
    freezes the loaded World out of the garbage collector's reach (process-wide: the CLI's own server sets it).
    """
    if allow_writes and not token:
        raise ValueError("allow_writes needs a token (the CLI generates one and prints it)")
    if isinstance(source, str | os.PathLike):
        db = os.fspath(source)
        obs = Observer(db, tune_gc=tune_gc)
        runtime = None
    else:
        runtime = source
        obs = Observer.for_runtime(runtime)
    state = WebState(obs, allow_writes=allow_writes, token=token, command_wait=command_wait,
                     poll_interval=poll_interval, started=runtime is not None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if runtime is not None:
            try:
                yield
            finally:
                state.closing = True
                obs.close()
            return
        async with AsyncExitStack() as stack:
            try:
                elog = await stack.enter_async_context(open_reader(db))
            except (WantbuildError, OSError) as e:
                obs._fail(f"{obs.db} cannot be opened: {e}")
                elog = None
            state.started = True
            async with anyio.create_task_group() as tg:
                if elog is not None:
                    await tg.start(_follow, obs, elog, poll_interval)
                try:
                    yield
                finally:
                    state.closing = True
                    obs.close()
                    tg.cancel_scope.cancel()

    static = StaticFiles()
    routes = [
        Route("/", page(_status_view), methods=["GET"]),
        Route("/wants", page(_wants_view), methods=["GET"]),
        Route("/wants", page(lambda r: _form_write(r, "want")), methods=["POST"]),
        Route("/wants/{want_id}", _view("want.html", _want), methods=["GET"]),
        Route("/wants/{want_id}/cancel", page(lambda r: _form_write(r, "cancel")), methods=["POST"]),
        Route("/partitions", _view("partitions.html", _partitions, statuses=_statuses("partition")), methods=["GET"]),
        Route("/partitions/{ref:path}", _view("partition.html", _partition), methods=["GET"]),
        Route("/taint", page(lambda r: _form_write(r, "taint")), methods=["POST"]),
        Route("/runs", page(_runs_view), methods=["GET"]),
        Route("/runs/{run_id}", _view("run.html", _run), methods=["GET"]),
        Route("/events", page(_events_view), methods=["GET"]),
        Route("/diagrams", page(_diagrams_view), methods=["GET"]),
        Route("/commands/{command_id}", page(_command_view), methods=["GET"]),
        Route("/login", page(_login), methods=["GET", "POST"]),
        Route("/logout", page(_logout), methods=["POST"]),
        Route("/stream", page(_page_stream), methods=["GET"]),
        Route("/static/{version}/{path:path}", static.serve, methods=["GET"]),
        # the JSON API (documented in /api/openapi.json)
        Route("/api/health", api(_health), methods=["GET"]),
        Route("/api/status", api(_status), methods=["GET"]),
        Route("/api/wants", api(_wants), methods=["GET"]),
        Route("/api/wants", api(_api_create), methods=["POST"]),
        Route("/api/wants/{want_id}", api(_want), methods=["GET"]),
        Route("/api/wants/{want_id}/cancel", api(_api_cancel), methods=["POST"]),
        Route("/api/partitions", api(_partitions), methods=["GET"]),
        Route("/api/partitions/{ref:path}", api(_partition), methods=["GET"]),
        Route("/api/explain/{ref:path}", api(_explain), methods=["GET"]),
        Route("/api/lineage/{ref:path}", api(_lineage), methods=["GET"]),
        Route("/api/taint", api(_api_taint), methods=["POST"]),
        Route("/api/runs", api(_runs), methods=["GET"]),
        Route("/api/runs/{run_id}", api(_run), methods=["GET"]),
        Route("/api/events", api(_events), methods=["GET"]),
        Route("/api/stream", api(_api_stream), methods=["GET"]),
        Route("/api/diagrams/{kind}", api(_api_diagram), methods=["GET"]),
        Route("/api/commands/{command_id}", api(_api_command), methods=["GET"]),
        Route("/api/openapi.json", api(_openapi), methods=["GET"]),
    ]
    middleware = [Middleware(ServerTiming), Middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)]
    if trusted_hosts:
        middleware.insert(0, Middleware(HostCheck, hosts=trusted_hosts))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={404: _not_found, 405: _method_not_allowed})
    app.state.wantbuild = state
    return app


async def _follow(obs: Observer, elog: Any, poll_interval: float, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    await obs.follow_log(elog, poll_interval=poll_interval, task_status=task_status)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    p = HttpProblem(405, f"{request.method} is not allowed on {request.url.path}", title="Method not allowed")
    return _problem_json(p) if "/api/" in request.url.path else _problem_page(request, p)


async def _status_view(request: Request) -> Response:
    return render(request, "overview.html", {"d": await _status(request)})


async def _wants_view(request: Request) -> Response:
    return render(request, "wants.html", {"d": await _wants(request), "statuses": _statuses("want")})


async def _runs_view(request: Request) -> Response:
    d = await _runs(request)
    return render(request, "runs.html", {"d": d, "statuses": _statuses("job_run"),
                                         "jobs": sorted(web(request).obs.jobs)})


def _statuses(kind: str) -> list[str]:
    return [str(s) for s in MACHINES[kind].statuses]


async def _health(request: Request) -> dict[str, Any]:
    st = web(request)
    return {**st.obs.state(), "db": st.obs.db, "writes": st.allow_writes}


async def _explain(request: Request) -> dict[str, Any]:
    obs = require_ready(request)
    ex = await explain(obs.world, None, get_ref(request), index=obs)
    return ex.to_dict()


async def _lineage(request: Request) -> dict[str, Any]:
    """``wantbuild lineage --json`` over the observer's World (no replay)."""
    obs = require_ready(request)
    qp = request.query_params
    direction = qp.get("direction", "up")
    if direction not in ("up", "down"):
        raise HttpProblem(400, f"direction={direction!r}: give up or down", title="Bad query parameter")
    try:
        depth = int(qp["depth"]) if qp.get("depth") else None
        generation = int(qp["generation"]) if qp.get("generation") else None
        if (depth is not None and depth < 0) or (generation is not None and generation < 1):
            raise ValueError("depth must be >= 0 and generation >= 1")
    except ValueError as e:
        raise HttpProblem(400, f"depth and generation are integers: {e}", title="Bad query parameter") from None
    try:
        graph = lineage_of(obs.world, get_ref(request), direction=direction,  # type: ignore[arg-type]
                           depth=depth, generation=generation, max_nodes=2000)
    except NeverBuilt as e:
        raise HttpProblem(404, str(e), title="Never built") from None
    return graph.to_dict()


async def _api_diagram(request: Request) -> dict[str, Any]:
    kind = str(request.path_params["kind"])
    if kind not in DIAGRAM_KINDS:
        raise _unknown("diagram", kind, "this wantbuild", f"known: {', '.join(DIAGRAM_KINDS)}")
    return _diagram(kind)


async def _openapi(request: Request) -> dict[str, Any]:
    return openapi_schema(base(request))
