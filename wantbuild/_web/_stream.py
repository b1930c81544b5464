"""Server-sent events: pages hear when the log moved; API clients get the records themselves.

``/stream`` (pages) sends ``tick`` (the log moved: live regions re-fetch themselves, at most once a second)
and, for the events page, ``rows`` (the new matching events as table rows). ``/api/stream`` sends each matching
record as ``event: record`` with its ``seq`` as the event id, so a client that reconnects with ``Last-Event-ID``
gets what it missed from memory (the newest records); older ones are announced by an ``event: gap`` naming the
``seq`` range to read from ``/api/events``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from eventlog import Record

from ._common import WebState, web
from ._data import record_dict

MIN_INTERVAL = 1.0
KEEPALIVE = 15.0
MAX_ROWS = 200


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def _new_since(st: WebState, after: int, kinds: Collection[str], types: Collection[str],
               entity: str) -> tuple[list[Record], int]:
    """Matching records after ``after`` still in memory, newest last; and how many newer ones were missed."""
    recent = st.obs.recent
    if not recent or recent[-1].seq <= after:
        return [], 0
    missed = max(0, recent[0].seq - after - 1)
    got = [r for r in reversed(recent) if r.seq > after]
    got.reverse()
    got = [r for r in got if (not kinds or r.entity_kind in kinds) and (not types or r.event.event_name in types)
           and (not entity or r.entity_id == entity)]
    return got, missed


async def _events(request: Request, st: WebState, after: int, kinds: Collection[str], types: Collection[str],
                  entity: str, rows: Callable[[list[Record], int], str] | None, records: bool) -> AsyncIterator[str]:
    obs = st.obs
    yield "retry: 2000\n\n"
    sent = after  # the client has everything up to this seq (the page's render, or its Last-Event-ID)
    while not st.closing:
        current = obs.world.last_seq
        if current <= sent:
            changed = await obs.wait_changed(KEEPALIVE)
            if st.closing:
                return
            if not changed:
                yield ": keepalive\n\n"
            continue
        if rows is not None or records:
            new, missed = _new_since(st, sent, kinds, types, entity)
            if new:
                current = max(current, new[-1].seq)
            if records:
                if missed:  # older than what is kept in memory: the client reads them from /api/events
                    yield _sse("gap", json.dumps({"from_seq": sent + 1, "until_seq": sent + missed}))
                for rec in new:
                    yield _sse("record", json.dumps(record_dict(rec)), rec.seq)
            elif rows is not None and (new or missed):
                yield _sse("rows", rows(new[-MAX_ROWS:], missed + max(0, len(new) - MAX_ROWS)), current)
        sent = current
        # The id is the seq everything sent so far covers: a reconnecting client (Last-Event-ID) misses nothing
        # still in memory and gets nothing twice.
        yield _sse("tick", f"{sent:,}", sent)
        await anyio.sleep(MIN_INTERVAL)


def stream_response(request: Request, *, after: int, kinds: Collection[str], types: Collection[str], entity: str,
                    rows: Callable[[list[Record], int], str] | None = None, records: bool = False) -> StreamingResponse:
    st = web(request)
    return StreamingResponse(
        _events(request, st, after, kinds, types, entity, rows, records),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
