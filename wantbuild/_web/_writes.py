"""Writes: create and cancel wants, taint partitions, always through the log's command inbox.

The web view never writes events itself (it is not the log's writer, and a runtime mounted in the same process
consumes its inbox like any other): it checks the request against the state it follows, stores a command with
``EventLog.submit_command`` (the command names and payloads the CLI uses), and waits a few seconds for the
runtime's answer. Without an answer in time it says the command is queued (202): a runtime applies it when it
next serves the log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import anyio

from actors import InvalidRef, PartitionStatus, validate_refs

from ._common import HttpProblem, WebState

MAX_COMMENT = 2000


def _refs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list | tuple) or not value or not all(isinstance(r, str) for r in value):
        raise HttpProblem(400, "refs must be a non-empty list of partition refs", title="Bad request")
    try:
        return validate_refs(list(value))
    except InvalidRef as e:
        raise HttpProblem(400, str(e), title="Malformed partition ref") from None


def _seconds(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise HttpProblem(400, f"{name}={value!r} is not a number of seconds", title="Bad request") from None
    if not math.isfinite(x) or x <= 0:
        raise HttpProblem(400, f"{name} must be a positive number of seconds, got {value!r}", title="Bad request")
    return x


def _text(value: Any, name: str, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise HttpProblem(400, f"{name} must be a string", title="Bad request")
    text = value.strip()
    if required and not text:
        raise HttpProblem(400, f"{name} is required", title="Bad request")
    if len(text) > MAX_COMMENT:
        raise HttpProblem(400, f"{name} is longer than {MAX_COMMENT} characters", title="Bad request")
    return text


def want_command(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``want`` command's payload from a request body, checked (400 naming what is wrong)."""
    payload: dict[str, Any] = {"refs": list(_refs(body.get("refs"))), "comment": _text(body.get("comment"), "comment")}
    for name in ("ttl", "sla"):
        v = _seconds(body.get(name), name)
        if v is not None:
            payload[name] = v
    return payload


def cancel_command(st: WebState, want_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    want = st.obs.world.wants.get(want_id)
    if want is None:
        raise HttpProblem(404, f"no want {want_id!r} in {st.obs.db}", title="Unknown want", asked=want_id)
    if want.terminal:
        raise HttpProblem(409, f"want {want_id} is already {want.status}; only an active want can be canceled",
                          title="Not active")
    reason = _text(body.get("reason"), "reason") or "canceled from the web view"
    return {"want_id": want_id, "reason": reason}


def taint_command(st: WebState, body: Mapping[str, Any]) -> dict[str, Any]:
    refs = _refs(body.get("refs"))
    reason = _text(body.get("reason"), "reason", required=True)
    for ref in refs:
        p = st.obs.world.partition(ref)
        if p.status is not PartitionStatus.LIVE:
            raise HttpProblem(409, f"{ref} is {p.status}; only a Live partition can be tainted", title="Not Live")
    return {"refs": list(refs), "reason": reason}


async def submit(st: WebState, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Submit a command and wait up to ``command_wait`` s: ``(HTTP status, answer)``.

    200 with the runtime's result; 409 when the runtime refused it (its reason); 202 when nobody answered yet.
    """
    log = st.obs.log
    if log is None or log.closed:
        raise HttpProblem(503, "the log is not open", title="Not available")
    before = _versions(st, name, payload)
    command_id = await log.submit_command(name, payload)
    with anyio.move_on_after(st.command_wait):
        while True:
            cmd = await log.command(command_id)
            if cmd is not None and cmd.done:
                result = dict(cmd.result or {})
                if result.get("ok"):
                    await _visible(st, name, result, before)
                    return 200, {"command_id": command_id, "status": "done", **result}
                return 409, {"command_id": command_id, "status": "refused",
                             "error": str(result.get("error", "the runtime refused the command"))}
            await anyio.sleep(0.05)
    running = st.obs.runtime_running()
    note = ("the runtime has not answered yet; it applies the command when it gets to it" if running else
            "no runtime is running on this log: the command is queued and applied when a runtime next opens it")
    return 202, {"command_id": command_id, "status": "pending", "runtime_running": running, "message": note}


def _versions(st: WebState, name: str, payload: dict[str, Any]) -> dict[str, int]:
    """The ``entity_seq`` of what a command changes, before it is submitted."""
    world = st.obs.world
    if name == "cancel":
        want = world.wants.get(payload["want_id"])
        return {payload["want_id"]: want.entity_seq if want is not None else 0}
    if name == "taint":
        return {r: world.partition(r).entity_seq for r in payload["refs"]}
    return {}


async def _visible(st: WebState, name: str, result: dict[str, Any], before: dict[str, int],
                   timeout: float = 5.0) -> None:
    """Wait (bounded) until the state the pages show includes the command's effect: read your writes.

    The runtime completes a command after committing its events, but a server that follows the log from
    another process sees them at its next poll; a page shown right after the write must not miss them.
    """

    def seen() -> bool:
        world = st.obs.world
        if name == "want":
            return result.get("want_id") in world.wants
        table: dict[str, Any] = world.wants if name == "cancel" else world.partitions
        return all((e := table.get(k)) is not None and e.entity_seq > v for k, v in before.items())

    with anyio.move_on_after(timeout):
        while not seen():
            await st.obs.wait_changed(0.1)


def command_dict(cmd: Any) -> dict[str, Any]:
    """A stored command as the API shows it."""
    result = cmd.result
    status = "pending" if not cmd.done else ("done" if (result or {}).get("ok") else "refused")
    return {"command_id": cmd.id, "name": cmd.name, "payload": cmd.payload, "submitted_at": cmd.submitted_at,
            "completed_at": cmd.completed_at, "status": status, "result": result}
