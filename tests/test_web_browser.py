"""The web view in a real browser: Debian's headless Chromium driven by Playwright, against `wantbuild ui` serving
a log made by `wantbuild demo` while a runtime serves that log. Every page is loaded and checked, updates are
followed without a reload, and each page's screenshot is taken (written to docs/images/ with
WANTBUILD_WEB_SCREENSHOTS=1, for docs/web.md)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import need
from web_helpers import DEMO_WEEKLY, make_demo

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-test-token-42"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
try:
    from playwright.sync_api import BrowserContext, Page, ViewportSize, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

VIEWPORT: ViewportSize = {"width": 1200, "height": 820}


def _read_line(proc: subprocess.Popen[str], timeout: float, want: str) -> str:
    """The first stdout line of ``proc`` that contains ``want`` (fails after ``timeout`` seconds)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if want in line:
                return line.strip()
            if not line and proc.poll() is not None:
                break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"no line with {want!r} from {proc.args!r}; stderr: {err[-2000:]}")


def _stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM ``proc``; its exit code (killed and failed if it does not stop within 20 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    return proc.returncode


@dataclass
class Site:
    url: str
    db: Path
    ctx: BrowserContext
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def page(self) -> Page:
        page = self.ctx.new_page()
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        return page

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url.rstrip("/") + path, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=30, **kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if sync_playwright is None:
        need("playwright", "pip install playwright (the dev extra has it)")
    if not Path(CHROMIUM).exists():
        need("chromium", "install Debian's chromium (`apt-get install chromium`; .ci/run does)")
    tmp = tmp_path_factory.mktemp("web")
    db = make_demo(tmp / "demo.db")
    env = {**os.environ, "WANTBUILD_UI_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    runtime = subprocess.Popen([sys.executable, str(ROOT / "tests" / "web_serve.py"), str(db), str(tmp / "data")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ui = None
    try:
        _read_line(runtime, 30, "serving")
        ui = subprocess.Popen([sys.executable, "-m", "wantbuild", "ui", "--db", str(db), "--port", "0",
                               "--allow-writes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        url = _read_line(ui, 30, "http://127.0.0.1:")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS, viewport=VIEWPORT)
            try:
                yield Site(url, db, ctx)
            finally:
                ctx.close()
    finally:
        codes = [_stop(p) for p in (ui, runtime) if p is not None]
    assert codes == [0] * len(codes), "the ui and the runtime stop cleanly on SIGTERM"


def shot(page: Page, name: str) -> None:
    """Screenshot the page's first screen; into docs/images with WANTBUILD_WEB_SCREENSHOTS=1."""
    png = page.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < len(png) < 400_000
    if os.environ.get("WANTBUILD_WEB_SCREENSHOTS"):
        IMAGES.mkdir(exist_ok=True)
        (IMAGES / f"web-{name}.png").write_bytes(png)


def has_text(selector: str, text: str) -> str:
    """A page predicate: the element exists (live regions are swapped in and out) and shows ``text``."""
    return f"() => {{ const e = document.querySelector({selector!r}); return !!e && e.innerText.includes({text!r}); }}"


def wait_graphs(page: Page) -> None:
    """Wait until every Mermaid figure on the page is drawn (an <svg> inside it)."""
    page.wait_for_function("() => [...document.querySelectorAll('pre.mermaid')].every("
                           "p => p.getAttribute('data-processed') && p.querySelector('svg'))", timeout=20_000)


def test_every_page_shows_the_demo_log(site: Site) -> None:
    """Overview, lists, a want, a partition, a run, events and diagrams render what the demo built."""
    page = site.page()
    page.goto(site.url)
    assert page.title() == "Overview · wantbuild"
    assert page.locator(".card").filter(has_text="Partitions").locator("b").first.inner_text() in ("22", "29")
    assert "Latest failed runs" in page.inner_text("main")
    shot(page, "overview")

    page.goto(site.url + "wants")
    assert page.locator("table.list tbody tr").count() >= 16
    page.goto(site.url + "wants?q=raw/2026-11-03")
    assert page.locator("table.list tbody tr").count() == 1

    page.goto(site.url + "wants/w-00000001")
    wait_graphs(page)
    assert "weekly/2026-11-02" in page.inner_text("#live-partitions")
    assert page.locator("#live-derived svg g.node").count() == 16
    assert "WantSucceeded" in page.inner_text("#live-timeline")
    shot(page, "want")

    page.goto(site.url + f"partitions/{DEMO_WEEKLY}")
    wait_graphs(page)
    assert page.locator("#live-lineage svg g.node").count() == 22
    assert "How it became Live" in page.inner_text("#live-head")
    assert "UpstreamWaiting" in page.inner_text("#live-generations")
    shot(page, "partition")

    failed = site.api("GET", "/api/runs", params={"status": "Failed", "limit": 1}).json()["items"][0]
    page.goto(site.url + f"runs/{failed['job_run_id']}")
    text = page.inner_text("main")
    assert "transient error" in text
    assert page.locator("#attempts tbody tr").count() == 2
    shot(page, "run")

    page.goto(site.url + "events?kind=job_run")
    rows = page.locator("#rows tr")
    assert rows.count() == 100
    assert all(t.startswith("r-") for t in rows.locator("td:nth-child(3) a").all_inner_texts())
    page.goto(site.url + "events")
    shot(page, "events")

    page.goto(site.url + "diagrams")
    wait_graphs(page)
    assert page.locator("pre.mermaid svg").count() == 3
    assert "UpstreamWaiting" in page.inner_text("#partition")
    shot(page, "diagrams")

    page.goto(site.url + "partitions?status=Live&q=clean/")
    assert page.locator("table.list tbody tr").count() == 7
    page.close()
    assert site.problems == []
    assert [u for u in site.requests if not u.startswith(site.url)] == []


def test_a_want_created_in_the_browser_appears_on_an_open_page_without_reload(site: Site) -> None:
    """Sign in, create a want with the form: the wants page open in another tab lists it and follows it to
    Successful, without reloading; its own page updates as it builds."""
    watcher = site.page()
    watcher.goto(site.url + "wants")
    watcher.evaluate("window.__stayed = 'same page'")
    before = watcher.locator("table.list tbody tr").count()

    writer = site.page()
    writer.goto(site.url + f"login?token={TOKEN}")
    assert "signed in" in writer.inner_text("header")
    writer.goto(site.url + "wants")
    writer.click("summary:has-text('New want')")
    writer.fill("textarea[name=refs]", "weekly/2026-11-09")
    writer.fill("input[name=comment]", "from the browser test")
    writer.click("button:has-text('Create want')")
    writer.wait_for_url(re.compile(r".*/wants/w-\d+$"))
    want_id = writer.url.rsplit("/", 1)[1]
    writer.wait_for_function(has_text("#want-status", "Successful"), timeout=30_000)
    assert "from the browser test" in writer.inner_text("#live-head")

    watcher.wait_for_function(has_text("#live-main", want_id), timeout=20_000)
    row = watcher.locator("table.list tbody tr", has_text=want_id)
    row.locator(".st", has_text="Successful").wait_for(timeout=20_000)
    assert watcher.locator("table.list tbody tr").count() > before
    assert watcher.evaluate("window.__stayed") == "same page"
    watcher.close()
    writer.close()
    assert site.problems == []


def test_new_events_appear_at_the_top_of_the_events_page(site: Site) -> None:
    """A want submitted through the API shows up as new rows at the top of the open events page."""
    page = site.page()
    page.goto(site.url + "events?kind=want")
    top = int(page.locator("#rows tr").first.get_attribute("data-seq") or 0)
    page.evaluate("window.__stayed = 'same page'")
    r = site.api("POST", "/api/wants", json={"refs": ["daily/2026-11-20"], "comment": "events test"})
    assert r.status_code == 201, r.text
    want_id = r.json()["want_id"]
    page.wait_for_function(has_text("#rows", want_id), timeout=20_000)
    first = int(page.locator("#rows tr").first.get_attribute("data-seq") or 0)
    assert first > top
    seqs = [int(s or 0) for s in page.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True)
    assert page.evaluate("window.__stayed") == "same page"
    page.close()
    assert site.problems == []


def test_the_lineage_graph_links_to_partitions_and_errors_are_pages(site: Site) -> None:
    """Clicking a box of the lineage graph opens that partition; unknown ids and bad refs are error pages."""
    page = site.page()
    page.goto(site.url + f"partitions/{DEMO_WEEKLY}")
    wait_graphs(page)
    node = page.locator("#live-lineage g.node.linked[data-href$='/partitions/daily/2026-11-03']")
    node.click()
    page.wait_for_url(site.url + "partitions/daily/2026-11-03")
    assert "daily/2026-11-03" in page.inner_text("h1")

    resp = page.goto(site.url + "wants/w-99999999")
    assert resp is not None
    assert resp.status == 404
    assert "Unknown want" in page.inner_text("h1")
    assert "w-99999999" in page.inner_text(".problem")
    resp = page.goto(site.url + "partitions/daily/%20bad")
    assert resp is not None
    assert resp.status == 400
    assert "Malformed partition ref" in page.inner_text("h1")
    shot(page, "error")
    page.close()
    site.problems[:] = [p for p in site.problems if "404" not in p and "400" not in p]
    assert site.problems == []


def test_docs_show_every_screenshot_and_they_are_small() -> None:
    """docs/web.md shows a screenshot of each page; each is in docs/images and under 250 KB."""
    text = (ROOT / "docs" / "web.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\((images/[^)]+)\)", text)
    assert {Path(i).stem for i in images} == {"web-overview", "web-want", "web-partition", "web-run", "web-events",
                                               "web-diagrams", "web-error"}
    assert sorted(p.name for p in IMAGES.glob("web-*.png")) == sorted(Path(i).name for i in images)
    for image in images:
        path = ROOT / "docs" / image
        assert path.exists(), image
        assert path.stat().st_size < 250_000, image
