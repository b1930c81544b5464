"""What the page views, the JSON API and the stream share: the app's state, errors, parameters, auth."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from actors import InvalidRef, validate_ref

from ._data import DEFAULT_LIMIT, MAX_LIMIT, BadQuery, int_param, statuses_param
from ._observer import Observer

TOKEN_COOKIE = "wantbuild_ui_token"


class HttpProblem(Exception):
    """An answer other than 200 with a reason: 400 (bad input), 401, 403, 404 (unknown id), 409, 503..."""

    def __init__(self, status: int, message: str, *, title: str = "", asked: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title
        self.asked = asked
        self.headers = headers or {}


@dataclass
class WebState:
    """Everything a request needs: the observer, whether writes are on and their token, how long to wait."""

    obs: Observer
    allow_writes: bool = False
    token: str | None = None
    command_wait: float = 5.0
    poll_interval: float = 0.25
    started: bool = False
    closing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check_token(self, given: str | None) -> bool:
        return bool(given) and self.token is not None and hmac.compare_digest(str(given).encode(), self.token.encode())


def web(request: Request) -> WebState:
    state: WebState = request.app.state.wantbuild
    return state


def base(request: Request) -> str:
    """The prefix the app is mounted under (``""`` when it is the whole site)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def ref_path(ref: str) -> str:
    """A partition ref as a URL path (its slashes kept, anything else that URLs treat specially escaped)."""
    return quote(ref, safe="/")


def get_ref(request: Request) -> str:
    """The ``{ref}`` of a partition URL, validated: a malformed ref is a 400 naming the rule it breaks."""
    ref = str(request.path_params["ref"])
    try:
        return validate_ref(ref)
    except InvalidRef as e:
        raise HttpProblem(400, str(e), title="Malformed partition ref", asked=ref) from None


def list_params(request: Request, kind: str, prefix: str = "",
                default_limit: int = DEFAULT_LIMIT) -> tuple[set[str], str, int, int]:
    """``status`` (repeatable or comma-separated), ``q``, ``offset`` and ``limit`` of a list, checked."""
    qp = request.query_params
    try:
        statuses = statuses_param(qp.getlist(prefix + "status"), kind)
        offset = int_param(qp.get(prefix + "offset"), prefix + "offset", 0)
        limit = int_param(qp.get(prefix + "limit"), prefix + "limit", default_limit, 1, MAX_LIMIT)
    except BadQuery as e:
        raise HttpProblem(400, str(e), title="Bad query parameter") from None
    return statuses, qp.get(prefix + "q", "").strip(), offset, limit


def require_ready(request: Request) -> Observer:
    """The observer, if it can answer: loading is a 503 (retry shortly), a broken log a 500 saying why."""
    st = web(request)
    obs = st.obs
    if obs.phase == "ready":
        return obs
    if obs.phase == "failed":
        raise HttpProblem(500, f"{obs.error}. Check the log with `wantbuild replay {obs.db} --verify`.",
                          title="The log cannot be shown")
    if not st.started:
        raise HttpProblem(503, "the web view was not started: serve it with its lifespan (uvicorn does; when mounting "
                          "it in another Starlette app, pass lifespan=app.router.lifespan_context)",
                          title="Not started")
    raise HttpProblem(503, f"loading the log: replayed {obs.loaded_seq:,} of {obs.target_seq:,} events",
                      title="Loading", headers={"Retry-After": "1"})


def authorize_write(request: Request, *, api: bool) -> None:
    """Writes need ``--allow-writes`` (else 403) and the token (else 401), from a Bearer header or the cookie.

    The cookie (set by ``/login``) is only accepted from a same-origin page: a cross-site form cannot use it.
    """
    st = web(request)
    if not st.allow_writes:
        raise HttpProblem(403, "writes are off: start the web view with --allow-writes (and use its token)",
                          title="Writes are off")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        if st.check_token(auth[7:].strip()):
            return
        raise HttpProblem(401, "the bearer token is not this server's token", title="Wrong token",
                          headers={"WWW-Authenticate": 'Bearer realm="wantbuild"'})
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie is not None and not api:
        if not st.check_token(cookie):
            raise HttpProblem(401, "this browser's token is not this server's token: sign in again",
                              title="Wrong token")
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        same = site in (None, "same-origin") and (origin is None or origin.split("://", 1)[-1] == request.headers.get(
            "host", ""))
        if not same:
            raise HttpProblem(403, "a write from another site is refused", title="Cross-site write")
        return
    raise HttpProblem(401, "a write needs the server's token: send 'Authorization: Bearer TOKEN' (API) or sign in "
                      "at /login (browser); the token is printed when the server starts with --allow-writes",
                      title="Token required", headers={"WWW-Authenticate": 'Bearer realm="wantbuild"'})
