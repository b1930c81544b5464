"""The web view's HTTP API, through a real uvicorn server on 127.0.0.1: answers checked against the log and against
the OpenAPI document the server serves; bad input, tokens, a live runtime, a corrupt log."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from openapi_spec_validator import validate as validate_spec
from runtime_graphs import chain_graph
from starlette.routing import Route
from web_helpers import DEMO_WEEKLY, check_schema, copy_log, make_demo, served, spec, wait_ready

import wantbuild
from actors import rebuild
from eventlog import EventLog, Record
from wantbuild._web import create_app

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "demo.db")


@pytest.fixture
def demo_copy(demo_log: Path, tmp_path: Path) -> Path:
    return copy_log(demo_log, tmp_path / "demo.db")


async def get_ok(client: httpx.AsyncClient, url: str, path: str, **params: Any) -> Any:
    """GET ``url``; it must answer 200 with a body that fits the document's schema for ``path``."""
    r = await client.get(url, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    check_schema(path, "GET", 200, body)
    return body


async def world_of(db: Path) -> Any:
    async with EventLog.open(db, writer=False) as log:
        return await rebuild(log)


def test_openapi_document_is_valid_and_covers_every_api_route(demo_log: Path) -> None:
    """The served document is valid OpenAPI 3.1 and lists exactly the app's /api routes and methods."""
    doc = spec()
    validate_spec(doc)
    app = create_app(demo_log)
    routes = {(r.path, m.lower()) for r in app.routes if isinstance(r, Route) and r.path.startswith("/api/")
              for m in (r.methods or ()) if m != "HEAD"}
    documented = {(p.replace("{ref}", "{ref:path}"), m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented


async def test_every_read_endpoint_answers_what_the_log_holds(demo_log: Path) -> None:
    """Status, lists, one want, partition, run, explain, events and diagrams agree with a replay of the log."""
    world = await world_of(demo_log)
    async with served(create_app(demo_log)) as client:
        assert (await wait_ready(client))["phase"] == "ready"
        assert (await client.get("/api/openapi.json")).json() == json.loads(json.dumps(spec()))

        status = await get_ok(client, "/api/status", "/api/status")
        assert status["counts"] == world.counts()
        assert status["last_seq"] == world.last_seq
        assert status["runtime_running"] is False
        assert {r["job_run_id"] for r in status["failed_runs"]} == {
            r.job_run_id for r in world.runs.values() if r.status == "Failed"}

        wants = await get_ok(client, "/api/wants", "/api/wants", limit=5)
        assert wants["total"] == len(world.wants)
        assert [w["want_id"] for w in wants["items"]] == sorted(world.wants, reverse=True)[:5]
        derived = await get_ok(client, "/api/wants", "/api/wants", q="job_run:", limit=500)
        assert derived["total"] == len(world.wants) - 1

        root = await get_ok(client, "/api/wants/w-00000001", "/api/wants/{want_id}")
        assert root["want"]["refs"] == [DEMO_WEEKLY]
        assert root["derived"]["size"] == len(world.wants)
        assert root["derived"]["mermaid"].startswith("flowchart TD")
        assert next(h["type"] for h in root["history"]) == "WantCreated"
        assert root["progress"] == {"live": 1, "total": 1, "by_status": {"Live": 1}}

        parts = await get_ok(client, "/api/partitions", "/api/partitions", status="Live", q="daily/", limit=3)
        assert parts["total"] == 7
        assert [p["ref"] for p in parts["items"]] == sorted(r for r in world.partitions if r.startswith("daily/"))[:3]

        weekly = await get_ok(client, f"/api/partitions/{DEMO_WEEKLY}", "/api/partitions/{ref}")
        lineage = weekly["lineage"]
        assert {n["ref"] for n in lineage["nodes"]} == set(world.partitions)
        assert len(lineage["edges"]) == 21
        edges = {(e["upstream"], e["downstream"]) for e in lineage["edges"]}
        assert edges >= {("daily/2026-11-02", DEMO_WEEKLY), ("raw/2026-11-02", "clean/2026-11-02")}
        gens = weekly["generations"]
        assert [g["outcome"] for g in gens] == ["Live", "UpstreamWaiting"]
        assert gens[0]["job_run_id"] == world.partitions[DEMO_WEEKLY].built_by

        explained = await get_ok(client, f"/api/explain/{DEMO_WEEKLY}", "/api/explain/{ref}")
        assert explained["status"] == "Live"
        assert world.partitions[DEMO_WEEKLY].built_by in explained["summary"]

        failed = next(r for r in world.runs.values() if r.status == "Failed")
        run = await get_ok(client, f"/api/runs/{failed.job_run_id}", "/api/runs/{run_id}")
        assert next(a["job_run_id"] for a in run["attempts"]) == failed.job_run_id
        assert len(run["attempts"]) == 2
        assert run["attempts"][1]["status"] == "Succeeded"
        assert run["output"] == {"stdout": None, "stderr": None}
        runs = await get_ok(client, "/api/runs", "/api/runs", status="DepMiss", job="daily")
        assert runs["total"] == sum(1 for r in world.runs.values() if r.status == "DepMiss" and r.job == "daily")

        for kind in ("want", "partition", "jobrun"):
            d = await get_ok(client, f"/api/diagrams/{kind}", "/api/diagrams/{kind}")
            assert d["mermaid"].startswith("stateDiagram-v2")


async def test_event_pages_walk_the_whole_log_in_both_directions(demo_log: Path) -> None:
    """Newest-first pages (before_seq) and oldest-first pages (from_seq), filtered or not, add up to the log."""
    async with EventLog.open(demo_log, writer=False) as log:
        every = [r async for r in log.read()]
    async with served(create_app(demo_log)) as client:
        await wait_ready(client)
        cases: list[tuple[dict[str, str], Callable[[Record], bool]]] = [
            ({}, lambda r: True),
            ({"type": "JobRunFailed"}, lambda r: r.type == "JobRunFailed"),
            ({"kind": "want", "type": "WantCreated,WantSucceeded"},
             lambda r: r.type in ("WantCreated", "WantSucceeded")),
            ({"entity": DEMO_WEEKLY}, lambda r: r.entity_id == DEMO_WEEKLY),
        ]
        for filters, keep in cases:
            expected = [r.seq for r in every if keep(r)]
            seen: list[int] = []
            params: dict[str, Any] = {**filters, "limit": 7}
            while True:
                page = await get_ok(client, "/api/events", "/api/events", **params)
                seen.extend(e["seq"] for e in page["items"])
                if page["next_before_seq"] is None:
                    break
                params["before_seq"] = page["next_before_seq"]
            assert seen == expected[::-1], filters
            seen = []
            params = {**filters, "limit": 7, "from_seq": 1}
            while True:
                page = await get_ok(client, "/api/events", "/api/events", **params)
                seen.extend(e["seq"] for e in page["items"])
                if page["next_from_seq"] is None:
                    break
                params["from_seq"] = page["next_from_seq"]
            assert seen == expected, filters


@pytest.mark.parametrize(("url", "status", "needle"), [
    pytest.param("/api/wants/w-nope", 404, "no want 'w-nope'", id="unknown-want"),
    pytest.param("/api/runs/r-nope", 404, "no job run 'r-nope'", id="unknown-run"),
    pytest.param("/api/partitions/daily/1999-01-01", 404, "no partition 'daily/1999-01-01'", id="unknown-ref"),
    pytest.param("/api/partitions/daily//x", 400, "rule: empty-segment", id="malformed-ref"),
    pytest.param("/api/explain/daily/%20x", 400, "daily/ x", id="malformed-ref-space"),
    pytest.param("/api/wants?status=Done", 400, "status='Done' is not a want status", id="bad-status"),
    pytest.param("/api/wants?limit=0", 400, "limit=0 must be between 1 and 500", id="bad-limit"),
    pytest.param("/api/events?type=WantMade", 400, "type='WantMade' is not an event type", id="bad-type"),
    pytest.param("/api/events?before_seq=5&from_seq=2", 400, "not both", id="two-cursors"),
    pytest.param("/api/commands/x", 400, "is not a number", id="bad-command-id"),
    pytest.param("/api/commands/99", 404, "no command '99'", id="unknown-command"),
    pytest.param("/api/diagrams/planet", 404, "no diagram 'planet'", id="unknown-diagram"),
    pytest.param("/api/nothing", 404, "no page '/api/nothing'", id="unknown-path"),
])
async def test_bad_input_is_answered_with_its_reason(demo_log: Path, url: str, status: int, needle: str) -> None:
    """Unknown ids are 404s naming what was asked, malformed refs and parameters 400s naming the rule."""
    async with served(create_app(demo_log)) as client:
        await wait_ready(client)
        r = await client.get(url)
        assert r.status_code == status
        body = r.json()
        assert needle in body["error"]
        assert "Traceback" not in r.text
        check_schema("/api/wants/{want_id}", "GET", status, body)


@pytest.mark.parametrize(("url", "status", "needle"), [
    pytest.param("/wants/w-nope", 404, "w-nope", id="unknown-want"),
    pytest.param("/partitions/daily//x", 400, "rule: empty-segment", id="malformed-ref"),
    pytest.param("/runs/r-nope", 404, "r-nope", id="unknown-run"),
    pytest.param("/nothing/here", 404, "/nothing/here", id="unknown-page"),
])
async def test_bad_input_in_a_page_url_is_an_error_page(demo_log: Path, url: str, status: int, needle: str) -> None:
    """The HTML pages answer bad input with an error page saying what was asked, never a traceback."""
    async with served(create_app(demo_log)) as client:
        await wait_ready(client)
        r = await client.get(url)
        assert r.status_code == status
        assert r.headers["content-type"].startswith("text/html")
        assert needle in r.text
        assert "Traceback" not in r.text


async def pending(db: Path) -> list[Any]:
    async with EventLog.open(db, writer=False) as log:
        return await log.pending_commands()


async def test_writes_need_the_flag_and_the_token_and_change_nothing_otherwise(demo_copy: Path) -> None:
    """Without --allow-writes: 403; without or with a wrong token: 401; either way no command is stored."""
    body = {"refs": ["weekly/2026-11-09"]}
    async with served(create_app(demo_copy)) as client:
        await wait_ready(client)
        r = await client.post("/api/wants", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403
        assert "--allow-writes" in r.json()["error"]
    async with served(create_app(demo_copy, allow_writes=True, token=TOKEN, command_wait=0.2)) as client:
        await wait_ready(client)
        no_token: list[dict[str, str]] = [
            {}, {"Authorization": "Bearer wrong"}, {"Cookie": f"wantbuild_ui_token={TOKEN}"}]
        for headers in no_token:
            for url, payload in (("/api/wants", body), ("/api/wants/w-00000001/cancel", {}),
                                 ("/api/taint", {"refs": [DEMO_WEEKLY], "reason": "x"})):
                r = await client.post(url, json=payload, headers=headers)
                assert r.status_code == 401, (url, headers, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                check_schema(url.replace("w-00000001", "{want_id}"), "POST", 401, r.json())
        assert await pending(demo_copy) == []
        auth = {"Authorization": f"Bearer {TOKEN}"}
        bad: list[tuple[str, dict[str, Any], int, str]] = [
            ("/api/wants", {"refs": ["daily//x"]}, 400, "rule: empty-segment"),
            ("/api/wants", {"refs": []}, 400, "non-empty list"),
            ("/api/wants", {"refs": ["daily/1"], "ttl": -1}, 400, "ttl must be a positive"),
            ("/api/wants/w-nope/cancel", {}, 404, "w-nope"),
            ("/api/wants/w-00000001/cancel", {}, 409, "already Successful"),
            ("/api/taint", {"refs": ["raw/1999-01-01"], "reason": "x"}, 409, "is Missing"),
            ("/api/taint", {"refs": [DEMO_WEEKLY]}, 400, "reason is required"),
        ]
        for url, payload, status, needle in bad:
            r = await client.post(url, json=payload, headers=auth)
            assert r.status_code == status, (url, r.text)
            assert needle in r.json()["error"]
        assert await pending(demo_copy) == []
        # With the token and no runtime serving the log: stored in the inbox, answered 202.
        r = await client.post("/api/wants", json={**body, "comment": "queued"}, headers=auth)
        assert r.status_code == 202, r.text
        answer = r.json()
        check_schema("/api/wants", "POST", 202, answer)
        assert answer["status"] == "pending"
        assert answer["runtime_running"] is False
        queued = await pending(demo_copy)
        assert [(c.id, c.name, c.payload) for c in queued] == [
            (answer["command_id"], "want", {"refs": ["weekly/2026-11-09"], "comment": "queued"})]
        cmd = await get_ok(client, f"/api/commands/{answer['command_id']}", "/api/commands/{command_id}")
        assert cmd["status"] == "pending"
        status = await get_ok(client, "/api/status", "/api/status")
        assert [c["command_id"] for c in status["pending_commands"]] == [answer["command_id"]]


async def test_embedded_in_a_runtime_writes_go_through_the_inbox_and_show_at_once(tmp_path: Path) -> None:
    """``wantbuild.web_app(rt)``: a want created over HTTP is built by the runtime and the API shows it."""
    graph, built = chain_graph()
    async with wantbuild.open(tmp_path / "live.db", graph) as rt:
        app = wantbuild.web_app(rt, allow_writes=True, token=TOKEN, command_wait=10)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with served(app) as client:
            assert (await wait_ready(client))["phase"] == "ready"
            r = await client.post("/api/wants", json={"refs": ["daily/1", "daily/2"], "comment": "web"},
                                  headers=auth)
            assert r.status_code == 201, r.text
            check_schema("/api/wants", "POST", 201, r.json())
            want_id = r.json()["want_id"]
            await rt.wait_want(want_id, timeout=10)
            await rt.wait_quiescent()
            d = await get_ok(client, f"/api/wants/{want_id}", "/api/wants/{want_id}")
            assert d["want"]["status"] == "Successful"
            assert d["want"]["comment"] == "web"
            assert d["want"]["source"] == "cli"
            assert d["want"]["command_id"] == r.json()["command_id"]
            assert d["derived"]["size"] == 3  # each daily run reported its raw missing: a derived want each
            status = await get_ok(client, "/api/status", "/api/status")
            assert status["counts"] == rt.world.counts()
            assert status["runtime_running"] is True
            lineage = (await get_ok(client, "/api/partitions/daily/1", "/api/partitions/{ref}"))["lineage"]
            assert [(e["upstream"], e["downstream"]) for e in lineage["edges"]] == [("raw/1", "daily/1")]

            r = await client.post("/api/taint", json={"refs": ["raw/1"], "reason": "bad rows"}, headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["partitions"] == ["raw/1"]
            assert rt.world.partition("raw/1").status == "Tainted"
            r = await client.post(f"/api/wants/{want_id}/cancel", json={}, headers=auth)
            assert r.status_code == 409  # already Successful: refused before anything is submitted
            events = await get_ok(client, "/api/events", "/api/events", type="PartitionTainted")
            assert [e["entity_id"] for e in events["items"]] == ["raw/1"]
    assert built["daily/1"] == 1


async def test_the_stream_sends_new_records_as_a_runtime_commits_them(tmp_path: Path) -> None:
    """A reader-side app follows a log another runtime writes; /api/stream sends each new record with its seq."""
    graph, _ = chain_graph()
    db = tmp_path / "followed.db"
    async with wantbuild.open(db, graph) as rt, served(create_app(db, poll_interval=0.05)) as client:
        await wait_ready(client)
        got: list[dict[str, Any]] = []
        async with client.stream("GET", "/api/stream", params={"kind": "want"}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            handle = await rt.want(["daily/7"])
            with anyio.fail_after(15):
                event = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "record":
                        got.append(json.loads(line[6:]))
                        if got[-1]["type"] == "WantSucceeded" and got[-1]["entity_id"] == handle.want_id:
                            break
        assert [r["entity_kind"] for r in got] == ["want"] * len(got)
        assert [r["seq"] for r in got] == sorted(r["seq"] for r in got)
        assert {r["entity_id"] for r in got} >= {handle.want_id}
        ours = [r["type"] for r in got if r["entity_id"] == handle.want_id]
        assert ours[0] == "WantCreated"
        assert ours[-1] == "WantSucceeded"


async def test_a_log_that_is_not_a_log_is_an_error_page_not_a_traceback(tmp_path: Path) -> None:
    """A file that is no event log: every page and endpoint says so (500), and nothing else breaks."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    async with served(create_app(bad)) as client:
        health = await wait_ready(client)
        assert health["phase"] == "failed"
        assert "not a wantbuild event log" in health["error"]
        r = await client.get("/")
        assert r.status_code == 500
        assert "cannot be opened" in r.text
        assert "Traceback" not in r.text
        r = await client.get("/api/status")
        assert r.status_code == 500
        assert "not a wantbuild event log" in r.json()["error"]


def corrupt(db: Path, seq: int) -> None:
    """Make event ``seq`` undecodable (its payload no longer JSON), as a damaged disk would."""
    con = sqlite3.connect(db)
    con.execute("UPDATE events SET payload = ? WHERE seq = ?", (b"\x00garbage", seq))
    con.commit()
    con.close()


async def test_a_corrupt_event_is_named_on_the_error_page(demo_copy: Path) -> None:
    """A log whose event 40 cannot be decoded: pages answer 500 naming seq 40 and how to check the log."""
    corrupt(demo_copy, 40)
    async with served(create_app(demo_copy)) as client:
        assert (await wait_ready(client))["phase"] == "failed"
        for url in ("/", "/wants", f"/partitions/{DEMO_WEEKLY}"):
            r = await client.get(url)
            assert r.status_code == 500
            assert "seq 40" in r.text
            assert "wantbuild replay" in r.text
            assert "Traceback" not in r.text


async def test_corruption_met_while_following_keeps_the_good_state_and_says_where(tmp_path: Path) -> None:
    """An event that does not apply, appended after start: the pages keep the state before it, with a banner."""
    graph, _ = chain_graph()
    db = tmp_path / "live.db"
    async with wantbuild.open(db, graph) as rt:
        await (await rt.want(["daily/1"])).done()
    async with served(create_app(db, poll_interval=0.05)) as client:
        await wait_ready(client)
        before = (await client.get("/api/status")).json()["last_seq"]
        con = sqlite3.connect(db)
        ek = con.execute("SELECT entity_key FROM entities WHERE entity_id = 'w-00000001'").fetchone()[0]
        last_seq, eseq = con.execute("SELECT last_seq, last_entity_seq FROM entities WHERE entity_key = ?",
                                     (ek,)).fetchone()
        tk = con.execute("SELECT type_key FROM event_types WHERE name = 'WantCreated'").fetchone()[0]
        con.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (before + 1, ek, eseq + 1, last_seq, tk, b'{"refs":["daily/1"]}', 0.0))
        con.commit()
        con.close()
        with anyio.fail_after(10):
            while (health := (await client.get("/api/health")).json())["follow_error"] is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert f"seq {before + 1}" in health["follow_error"]
        r = await client.get("/")
        assert r.status_code == 200
        assert f"following stopped after seq {before}" in r.text
        assert (await client.get("/api/status")).json()["last_seq"] == before


async def test_loading_and_not_started_are_503_with_a_reason(demo_log: Path) -> None:
    """Before its lifespan ran the app says how to start it; while loading it says how far it got."""
    app = create_app(demo_log)
    transport = httpx.ASGITransport(app=app)  # no lifespan: nothing started
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        r = await client.get("/api/status")
        assert r.status_code == 503
        assert "lifespan" in r.json()["error"]
        app.state.wantbuild.started = True
        app.state.wantbuild.obs.phase = "loading"
        app.state.wantbuild.obs.target_seq = 1000
        r = await client.get("/")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert "of 1,000 events" in r.text
        assert "http-equiv=\"refresh\"" in r.text


async def test_host_check_timing_header_and_cached_compressed_scripts(demo_log: Path) -> None:
    """A foreign Host header is refused (421); answers carry Server-Timing; scripts are gzipped and immutable."""
    app = create_app(demo_log, trusted_hosts=["127.0.0.1", "localhost"])
    async with served(app) as client:
        await wait_ready(client)
        r = await client.get("/api/health", headers={"Host": "attacker.example"})
        assert r.status_code == 421
        assert "attacker.example" in r.json()["error"]
        r = await client.get("/api/health", headers={"Host": "localhost:1234"})
        assert r.status_code == 200
        assert r.headers["server-timing"].startswith("app;dur=")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        version = wantbuild.__version__
        r = await client.get(f"/static/{version}/vendor/mermaid-12.3.0.min.js", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers["content-encoding"] == "gzip"
        assert "immutable" in r.headers["cache-control"]
        assert len(r.content) > 5_000_000
        assert (await client.get(f"/static/{version}/%2e%2e/_app.py")).status_code == 404


async def test_every_live_region_refreshes_to_what_the_full_page_shows(demo_log: Path) -> None:
    """Each live region of each page answers its fresh HTML (the same as in the full page), 204 when unchanged."""
    pages = ["/", "/wants?status=Successful", "/wants/w-00000001", "/partitions?q=raw", f"/partitions/{DEMO_WEEKLY}",
             "/runs?job=clean", "/runs/r-00000001"]
    async with served(create_app(demo_log)) as client:
        await wait_ready(client)
        seen = 0
        for url in pages:
            for _ in range(2):  # the overview's throughput chart moves on at each minute: once more if it did
                full = await client.get(url)
                assert full.status_code == 200, url
                regions = re.findall(r'<div id="live-([a-z]+)" class="live" hx-get="([^"]+)"', full.text)
                codes = [(await client.get(html.unescape(refresh))).status_code for _, refresh in regions]
                if codes == [204] * len(regions):
                    break
            assert regions, url
            assert codes == [204] * len(regions), (url, codes)
            for name, refresh in regions:
                refresh = html.unescape(refresh)
                stale = re.sub(r"h=[0-9a-f]+", "h=0", refresh)
                r = await client.get(stale)
                assert r.status_code == 200, (url, name, r.text[:300])
                assert r.text in full.text
                seen += 1
        assert seen >= 14


async def test_refs_with_schemes_and_url_characters_round_trip_through_links(tmp_path: Path) -> None:
    """A page links `s3://...` and refs with `%`, `?`, `#` so that following the link opens that partition."""
    from actors import WantCreated

    refs = ("s3://bucket/events/date=2026-11-01", "daily/a%20b?x#y")
    db = tmp_path / "odd.db"
    async with EventLog.open(db) as log:
        await log.append("want", "w-00000001", 0, WantCreated(refs=refs))
    async with served(create_app(db)) as client:
        await wait_ready(client)
        page = (await client.get("/wants/w-00000001")).text
        links = sorted(set(re.findall(r'href="(/partitions/[^"]+)"', page)))
        assert len(links) == 2
        for link in links:
            r = await client.get(html.unescape(link))
            assert r.status_code == 200, link
            shown = re.search(r'<span class="ref">([^<]+)</span>', r.text)
            assert shown is not None
            assert html.unescape(shown.group(1)) in refs


async def test_a_stream_resumed_with_last_event_id_sends_what_came_after(demo_log: Path) -> None:
    """Reconnecting to /api/stream with Last-Event-ID N replays the records after N, once, then a tick."""
    async with served(create_app(demo_log)) as client:
        last = (await wait_ready(client))["last_seq"]
        ids: list[int] = []
        events: list[str] = []
        async with client.stream("GET", "/api/stream", headers={"Last-Event-ID": str(last - 5)}) as resp:
            with anyio.fail_after(10):
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        events.append(line[7:])
                    elif line.startswith("id: "):
                        ids.append(int(line[4:]))
                        if events[-1] == "tick":
                            break
        assert events == ["record"] * 5 + ["tick"]
        assert ids == [*range(last - 4, last + 1), last]


async def test_a_stream_resumed_from_too_far_back_names_the_gap(demo_log: Path) -> None:
    """Records no longer in memory are announced as a gap (a seq range to read from /api/events), not dropped."""
    app = create_app(demo_log)
    async with served(app) as client:
        last = (await wait_ready(client))["last_seq"]
        recent = app.state.wantbuild.obs.recent
        while len(recent) > 10:  # keep only the newest 10 in memory
            recent.popleft()
        events: list[tuple[str, str]] = []
        async with client.stream("GET", "/api/stream", params={"after": str(last - 30)}) as resp:
            with anyio.fail_after(10):
                event = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, line[6:]))
                        if event == "tick":
                            break
        assert events[0] == ("gap", json.dumps({"from_seq": last - 29, "until_seq": last - 10}))
        assert [json.loads(d)["seq"] for e, d in events if e == "record"] == list(range(last - 9, last + 1))


async def test_lineage_by_generation_as_the_cli_gives_it(demo_log: Path) -> None:
    """/api/lineage/{ref} answers what `wantbuild lineage --json` does; the partition page's lineage shows the
    recorded reads; a ref never built is a 404 saying so, a bad direction a 400."""
    world = await world_of(demo_log)
    async with served(create_app(demo_log)) as client:
        await wait_ready(client)
        up = await get_ok(client, f"/api/lineage/{DEMO_WEEKLY}", "/api/lineage/{ref}")
        assert up == wantbuild.lineage(world, DEMO_WEEKLY).to_dict()
        assert len(up["nodes"]) == 22
        down = await get_ok(client, "/api/lineage/raw/2026-11-04", "/api/lineage/{ref}", direction="down", depth=1)
        assert [n["ref"] for n in down["nodes"]] == ["raw/2026-11-04", "clean/2026-11-04"]
        assert down["truncated"] is True
        page = await get_ok(client, "/api/partitions/daily/2026-11-04", "/api/partitions/{ref}")
        kinds = {(e["upstream"], e["kind"]) for e in page["lineage"]["edges"] if e["downstream"] == "daily/2026-11-04"}
        assert ("clean/2026-11-04", "missing-dependency") in kinds
        never = await client.get("/api/lineage/daily/2027-01-01")
        assert never.status_code == 404
        assert "was never built" in never.json()["error"]
        bad = await client.get(f"/api/lineage/{DEMO_WEEKLY}", params={"direction": "sideways"})
        assert bad.status_code == 400
