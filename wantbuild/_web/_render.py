"""Server-side HTML: Jinja2 templates, the live regions that htmx refreshes, formatting helpers."""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from wantbuild import __version__
from wantbuild._output import fmt_time

from ._common import TOKEN_COOKIE, base, ref_path, web
from ._graphs import STATUS_CLASS

VENDOR = {
    "htmx": "vendor/htmx-2.0.11.min.js",
    "sse": "vendor/htmx-ext-sse-2.2.4.min.js",
    "mermaid": "vendor/mermaid-12.3.0.min.js",
}

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("wantbuild._web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _duration(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return ""
    d = b - a
    if d < 1:
        return f"{d * 1000:.0f} ms"
    if d < 120:
        return f"{d:.1f} s"
    if d < 7200:
        return f"{d / 60:.1f} min"
    return f"{d / 3600:.1f} h"


def _status(status: Any) -> Markup:
    s = str(status)
    return Markup(f'<span class="st st-{STATUS_CLASS.get(s, "none")}">{html.escape(s)}</span>')


def _pct(part: int, whole: int) -> float:
    return 0.0 if not whole else round(100.0 * part / whole, 1)


ENV.filters.update(num=_num, status=_status, time=fmt_time,
                   jsontext=lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")))
ENV.globals.update(duration=_duration, pct=_pct, version=__version__, vendor=VENDOR)


def url_for_page(request: Request, **changes: Any) -> str:
    """The current URL with query parameters changed (``None`` removes one); ``part`` and ``h`` always go."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in changes and k not in ("part", "h")]
    for k, v in changes.items():
        if v is None or v == "" or v is False:
            continue
        if isinstance(v, list | tuple | set):
            params.extend((k, str(x)) for x in v)
        else:
            params.append((k, str(v)))
    q = urlencode(params)
    return base(request) + request.url.path.removeprefix(base(request)) + (f"?{q}" if q else "")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def live_region(request: Request, name: str, content: str) -> Markup:
    """A region htmx re-fetches on each ``tick`` from the stream; the server answers 204 if it did not change."""
    h = _digest(content)
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("part", "h")]
    params += [("part", name), ("h", h)]
    url = base(request) + request.url.path.removeprefix(base(request)) + "?" + urlencode(params)
    return Markup(
        f'<div id="live-{html.escape(name)}" class="live" hx-get="{html.escape(url)}" hx-trigger="sse:tick" '
        f'hx-swap="outerHTML">{content}</div>'
    )


def _short_db(db: str) -> str:
    """The log's file name, or its URL (already without a password: ``Observer.db``)."""
    return db if "://" in db else os.path.basename(db) or db


def url_helpers(b: str) -> dict[str, Any]:
    """Links to entities under the app's prefix ``b`` (for templates)."""
    return {
        "base": b,
        "ref_url": lambda ref: f"{b}/partitions/{ref_path(ref)}",
        "want_url": lambda wid: f"{b}/wants/{quote(wid, safe='')}",
        "run_url": lambda rid: f"{b}/runs/{quote(rid, safe='')}",
    }


def render(request: Request, name: str, ctx: Mapping[str, Any], *, status: int = 200,
           headers: Mapping[str, str] | None = None) -> Response:
    """A page, or with ``?part=NAME`` just its live region ``NAME`` (204 when its ``h`` hash is unchanged)."""
    st = web(request)
    b = base(request)
    obs = st.obs
    urls = url_helpers(b)

    def url(kind: str, x: str) -> str:
        return str(urls[f"{kind}_url"](x))

    full: dict[str, Any] = {
        "request": request, "base": b, "obs": obs, "db": obs.db, "db_name": _short_db(obs.db), "state": obs.state(),
        "allow_writes": st.allow_writes, "signed_in": st.check_token(request.cookies.get(TOKEN_COOKIE)),
        "static": lambda path: f"{b}/static/{__version__}/{path}",
        **urls,
        "page_url": lambda **kw: url_for_page(request, **kw),
        "hrefs": lambda kind, ids: [url(kind, x) for x in ids],
        "live": lambda region, content: live_region(request, region, str(content)),
        "runtime_running": obs.runtime_running() if obs.phase == "ready" else False,
        **ctx,
    }
    part = request.query_params.get("part")
    tmpl = ENV.get_template(name)
    if part is not None:
        block = tmpl.blocks.get(f"part_{part}")
        if block is None:
            return HTMLResponse(f"no region {html.escape(part)}", status_code=400)
        # A block rendered on its own does not run the page's top-level imports: give it the macros.
        full["m"] = ENV.get_template("macros.html").make_module(full)
        content = "".join(block(tmpl.new_context(full)))
        if request.query_params.get("h") == _digest(content):
            return Response(status_code=204)
        return HTMLResponse(live_region(request, part, content), status_code=status, headers=headers)
    return HTMLResponse(tmpl.render(full), status_code=status, headers=headers)
