"""The HTTP API's OpenAPI 3.1 document, served at ``/api/openapi.json``.

The entity schemas are generated from the state structs themselves (``msgspec.json.schema_components``), so
the document cannot drift from what the API returns; every object is closed (``additionalProperties: false``)
and lists every field as required, which is what the API sends. ``tests/test_web_api.py`` validates the
document and checks every answer the tests get against it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgspec

from actors import JobRunState, PartitionState, WantState
from wantbuild import __version__

R = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": R + name}


def _obj(props: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _page(item: str) -> dict[str, Any]:
    return _obj({"total": INT, "offset": INT, "limit": INT, "items": _array(_ref(item))})


@functools.cache
def _components() -> dict[str, Any]:
    _, generated = msgspec.json.schema_components([WantState, PartitionState, JobRunState],
                                                  ref_template=R + "{name}")
    schemas: dict[str, Any] = {}
    for name, schema in generated.items():
        s = copy.deepcopy(schema)
        if s.get("type") == "object":
            s["required"] = list(s["properties"])
            s["additionalProperties"] = False
            for prop in s["properties"].values():
                prop.pop("default", None)
        schemas[name] = s
    want_summary = copy.deepcopy(schemas["WantState"])
    want_summary["properties"]["progress"] = _obj({"live": INT, "total": INT})
    want_summary["required"].append("progress")
    want_summary["title"] = "WantSummary"
    record = _obj({"seq": INT, "at": NUM, "entity_kind": {"enum": ["want", "partition", "job_run"]},
                   "entity_id": STR, "entity_seq": INT, "type": STR, "version": INT, "payload": {"type": "object"}})
    explanation = _obj({"ref": STR, "status": STR, "summary": STR, "details": _array(STR), "wants": _array(STR),
                        "runs": _array(STR), "upstream": _array(_ref("Explanation"))})
    counts = {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": INT}}
    id_status = _obj({"want_id": STR, "status": STR})
    tree: dict[str, Any] = _obj({"want_id": STR, "status": STR, "refs": INT, "first_ref": STR, "source": STR,
                                 "children": _array(_ref("WantTree")), "more": INT})
    output = _nullable(_obj({"path": STR, "text": STR, "size": INT, "truncated": BOOL, "error": _nullable(STR)}))
    command = _obj({"command_id": INT, "name": STR, "payload": {"type": "object"}, "submitted_at": NUM,
                    "completed_at": _nullable(NUM), "status": {"enum": ["pending", "done", "refused"]},
                    "result": _nullable({"type": "object"})})
    schemas.update({
        "WantSummary": want_summary,
        "Record": record,
        "Explanation": explanation,
        "GenerationLineage": _obj({
            "root": STR, "direction": {"enum": ["up", "down"]}, "depth": _nullable(INT), "truncated": BOOL,
            "nodes": _array(_obj({"ref": STR, "generation": INT, "level": INT, "status": STR,
                                  "current_generation": INT, "run": _nullable(STR), "job": _nullable(STR),
                                  "built_at": _nullable(NUM), "stale": BOOL, "tainted_by": _nullable(STR)})),
            "edges": _array(_obj({"from": STR, "to": STR}, required=["from", "to"]))},
            required=["root", "direction", "nodes", "edges"]),
        "WantTree": tree,
        "Command": command,
        "Error": _obj({"error": STR, "status": INT, "title": STR, "asked": STR}, required=["error", "status"]),
        "Health": _obj({"phase": {"enum": ["starting", "loading", "ready", "failed"]}, "last_seq": INT,
                        "loaded_seq": INT, "target_seq": INT, "error": _nullable(STR),
                        "follow_error": _nullable(STR), "db": STR, "writes": BOOL,
                        "load_seconds": _nullable(_obj({"replay": NUM, "index": NUM}))}),
        "Status": _obj({
            "db": STR, "runtime_running": BOOL, "last_seq": INT, "last_at": NUM, "counts": counts,
            "active_wants": _obj({"total": INT, "items": _array(_ref("WantSummary"))}),
            "in_flight_runs": _obj({"total": INT, "items": _array(_ref("JobRunState"))}),
            "failed_partitions": _obj({"total": INT, "items": _array(_ref("PartitionState"))}),
            "failed_runs": _array(_ref("JobRunState")),
            "throughput": _obj({"end": NUM, "minutes": _array(_obj({"minute": NUM, "live": INT, "succeeded": INT,
                                                                     "failed": INT, "events": INT}))}),
            "pending_commands": _array(_ref("Command")),
        }),
        "WantsPage": _page("WantSummary"),
        "PartitionsPage": _page("PartitionState"),
        "RunsPage": _page("JobRunState"),
        "WantDetail": _obj({
            "want": _ref("WantState"),
            "progress": _obj({"live": INT, "total": INT,
                              "by_status": {"type": "object", "additionalProperties": INT}}),
            "partitions": _ref("PartitionsPage"), "runs": _ref("RunsPage"), "parents": _array(_ref("WantState")),
            "derived": _obj({"tree": _ref("WantTree"), "size": INT, "truncated": BOOL, "order": _array(STR),
                             "mermaid": STR}),
            "history": _array(_ref("Record")),
        }),
        "Lineage": _obj({
            "ref": STR,
            "nodes": _array(_obj({"ref": STR, "status": STR, "level": INT, "root": BOOL})),
            "edges": _array(_obj({"upstream": STR, "downstream": STR, "via": STR,
                                  "kind": {"enum": ["missing-dependency", "read"]}})),
            "truncated": BOOL, "mermaid": STR,
        }),
        "PartitionDetail": _obj({
            "partition": _ref("PartitionState"), "explain": _ref("Explanation"), "needs": _array(STR),
            "generations": _array(_obj({"generation": INT, "job_run_id": STR, "job": _nullable(STR),
                                        "started_at": NUM, "ended_at": _nullable(NUM), "outcome": STR,
                                        "reason": STR})),
            "runs": _ref("RunsPage"), "wants": _array(id_status), "wants_total": INT, "lineage": _ref("Lineage"),
            "history": _array(_ref("Record")),
        }),
        "RunDetail": _obj({
            "run": _ref("JobRunState"), "attempts": _array(_ref("JobRunState")),
            "partitions": _ref("PartitionsPage"), "wants": _array(id_status), "history": _array(_ref("Record")),
            "output": _obj({"stdout": output, "stderr": output}),
        }),
        "EventsPage": _obj({
            "items": _array(_ref("Record")), "limit": INT, "last_seq": INT,
            "order": {"enum": ["ascending", "descending"]},
            "next_before_seq": _nullable(INT), "next_from_seq": _nullable(INT), "scanned_to": _nullable(INT),
            "filters": _obj({"kind": _array(STR), "type": _array(STR), "entity": STR}),
        }),
        "Diagram": _obj({"kind": STR, "name": STR, "mermaid": STR, "terminal": _array(STR),
                         "transitions": _array(_obj({"from": _nullable(STR), "to": _nullable(STR), "event": STR}))}),
        "CommandAnswer": {"type": "object", "required": ["command_id", "status"],
                          "properties": {"command_id": INT, "status": {"enum": ["done", "refused", "pending"]},
                                         "error": STR, "message": STR, "runtime_running": BOOL, "ok": BOOL,
                                         "want_id": STR, "partitions": _array(STR)},
                          "additionalProperties": True},
        "CreateWant": _obj({"refs": {"type": "array", "items": STR, "minItems": 1}, "comment": STR,
                            "ttl": {"type": "number", "exclusiveMinimum": 0},
                            "sla": {"type": "number", "exclusiveMinimum": 0}}, required=["refs"]),
        "CancelWant": _obj({"reason": STR}, required=[]),
        "Taint": _obj({"refs": {"type": "array", "items": STR, "minItems": 1}, "reason": STR},
                      required=["refs", "reason"]),
    })
    return schemas


def _param(name: str, where: str, schema: dict[str, Any], desc: str, *, required: bool = False,
           explode: bool | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": where, "schema": schema, "description": desc,
                         "required": required or where == "path"}
    if explode is not None:
        p["explode"] = explode
    return p


def _json_response(desc: str, schema: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ref(schema)}}}


ERRORS = {
    "400": _json_response("A malformed parameter or ref (the reason is in error)", "Error"),
    "500": _json_response("The log cannot be read (the reason is in error)", "Error"),
    "503": _json_response("The log is still loading (retry; see /api/health)", "Error"),
}
WRITE_ERRORS = {
    "401": _json_response("No token, or not this server's token", "Error"),
    "403": _json_response("Writes are off (start with --allow-writes)", "Error"),
    "409": _json_response("The state does not allow it, or the runtime refused it (its reason)", "Error"),
}


def _list_params(kind: str, default: int = 100) -> list[dict[str, Any]]:
    return [
        _param("status", "query", _array(STR), f"only these {kind} statuses (repeat, or comma-separated)"),
        _param("q", "query", STR, "a substring to search for"),
        _param("offset", "query", {"type": "integer", "minimum": 0}, "skip this many"),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, f"page size (default {default})"),
    ]


def _get(summary: str, schema: str, params: list[dict[str, Any]] | None = None, *,
         not_found: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json_response(summary, schema), **ERRORS}
    if not_found:
        responses["404"] = _json_response("No such entity (the id asked is in asked)", "Error")
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


def _post(summary: str, body: str | None, params: list[dict[str, Any]] | None = None, *, created: bool = False,
          not_found: bool = False) -> dict[str, Any]:
    ok = "201" if created else "200"
    responses: dict[str, Any] = {
        ok: _json_response("The runtime applied it (its answer)", "CommandAnswer"),
        "202": _json_response("Submitted; no runtime answered yet (queued in the command inbox)", "CommandAnswer"),
        **ERRORS, **WRITE_ERRORS,
    }
    if not_found:
        responses["404"] = _json_response("No such want", "Error")
    op: dict[str, Any] = {"summary": summary, "parameters": params or [], "responses": responses,
                          "security": [{"token": []}]}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return {"post": op}


def openapi_schema(server: str = "") -> dict[str, Any]:
    """The whole document; ``server`` is the prefix the app is mounted under."""
    ref_param = _param("ref", "path", STR, "a partition ref, its slashes kept (e.g. daily/2026-11-02)")
    rpage = [_param("roffset", "query", {"type": "integer", "minimum": 0}, "runs: skip this many"),
             _param("rlimit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "runs: page size (20)")]
    event_filters = [
        _param("kind", "query", _array({"enum": ["want", "partition", "job_run"]}), "only these entity kinds"),
        _param("type", "query", _array(STR), "only these event types, e.g. WantCreated"),
        _param("entity", "query", STR, "only this entity's events (a want id, a ref, a run id)"),
    ]
    paths: dict[str, Any] = {
        "/api/health": _get("Whether the log is loaded, and how far", "Health"),
        "/api/status": _get("Counts per status, active wants, runs in flight, failures, throughput, pending "
                            "commands (as `wantbuild status --json`, lists bounded)", "Status"),
        "/api/wants": {
            **_get("Wants, newest first", "WantsPage",
                   [*_list_params("want"), _param("active", "query", BOOL, "only wants not terminal yet")]),
            **_post("Create a want (through the command inbox)", "CreateWant", created=True),
        },
        "/api/wants/{want_id}": _get(
            "One want: partitions (paged: pstatus, pq, poffset, plimit), runs (roffset, rlimit), derived wants, "
            "history", "WantDetail",
            [_param("want_id", "path", STR, "the want's id"),
             *[{**p, "name": "p" + p["name"]} for p in _list_params("partition", 50)], *rpage], not_found=True),
        "/api/wants/{want_id}/cancel": _post("Cancel an active want (through the command inbox)", "CancelWant",
                                             [_param("want_id", "path", STR, "the want's id")], not_found=True),
        "/api/partitions": _get("Partitions, by ref", "PartitionsPage", _list_params("partition")),
        "/api/partitions/{ref}": _get("One partition: explain, generations, runs, wants, lineage, history",
                                      "PartitionDetail", [ref_param, *rpage], not_found=True),
        "/api/explain/{ref}": _get("Why a partition is not Live yet (as `wantbuild explain --json`)", "Explanation",
                                   [ref_param]),
        "/api/lineage/{ref}": _get(
            "What a partition was built from (up) or what was built from it (down), by generation (as `wantbuild "
            "lineage --json`)", "GenerationLineage",
            [ref_param, _param("direction", "query", {"enum": ["up", "down"]}, "up (default) or down"),
             _param("depth", "query", {"type": "integer", "minimum": 0}, "at most this many levels (default: all)"),
             _param("generation", "query", {"type": "integer", "minimum": 1},
                    "a past generation (default: the current one)")], not_found=True),
        "/api/taint": _post("Mark Live partitions Tainted (through the command inbox)", "Taint"),
        "/api/runs": _get("Job runs, newest first", "RunsPage",
                          [*_list_params("job run"), _param("job", "query", STR, "only this job's runs")]),
        "/api/runs/{run_id}": _get(
            "One job run: partitions (poffset, plimit), attempts, history, the tail of its output", "RunDetail",
            [_param("run_id", "path", STR, "the run's id"),
             _param("poffset", "query", {"type": "integer", "minimum": 0}, "partitions: skip this many"),
             _param("plimit", "query", {"type": "integer", "minimum": 1, "maximum": 500},
                    "partitions: page size (50)")],
            not_found=True),
        "/api/events": _get(
            "Committed events: newest first before before_seq, or oldest first from from_seq; a filtered page "
            "scans a bounded range and says where it stopped (scanned_to)", "EventsPage",
            [*event_filters,
             _param("before_seq", "query", {"type": "integer", "minimum": 1}, "newest first, below this seq"),
             _param("from_seq", "query", {"type": "integer", "minimum": 1}, "oldest first, from this seq"),
             _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "page size")]),
        "/api/stream": {"get": {
            "summary": "Server-sent events: each new matching record as `event: record` (id: its seq; reconnect "
                       "with Last-Event-ID), `event: tick` when the log moved, and `event: gap` ({from_seq, "
                       "until_seq}) for records no longer in memory (read them from /api/events)",
            "parameters": [*event_filters, _param("after", "query", INT, "send records after this seq")],
            "responses": {"200": {"description": "An event stream",
                                  "content": {"text/event-stream": {"schema": STR}}}, **ERRORS}}},
        "/api/diagrams/{kind}": _get("A state machine as Mermaid, with its transition table (as `wantbuild "
                                     "diagram --json`)", "Diagram",
                                     [_param("kind", "path", {"enum": ["want", "partition", "jobrun"]}, "which")],
                                     not_found=True),
        "/api/commands/{command_id}": _get("A command submitted to the inbox, and its result once applied",
                                           "Command", [_param("command_id", "path", INT, "its id")],
                                           not_found=True),
        "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
            "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "wantbuild web view", "version": __version__,
                 "description": "Read the state of a wantbuild event log, live; with --allow-writes, create and "
                                "cancel wants and taint partitions through the log's command inbox."},
        "servers": [{"url": server or "/"}],
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                          "description": "the token printed by `wantbuild ui --allow-writes` "
                                                         "(or WANTBUILD_UI_TOKEN)"}},
        },
    }
