"""What each page and API endpoint shows, as plain JSON-ready data built from the observer's memory.

One function per page; the HTML templates and the JSON API render the same dicts, so the two never disagree.
Every list is a :func:`page` (``total``, ``offset``, ``limit``, ``items``): nothing returns 100,000 rows.
Only histories, the events page and job output read the log or disk (one entity's chain, a bounded window).
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from actors import MACHINES, JobRunState, PartitionState, PartitionStatus, WantState
from eventlog import Record
from supervisor import explain

from ._graphs import derived_tree, lineage
from ._observer import Observer, statuses_of

T = TypeVar("T")

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
EVENTS_SCAN_BUDGET = 200_000
"""At most this many events are scanned (in SQL, by seq range) for one filtered events page."""
OUTPUT_TAIL = 16_384
ACTIVE_WANT = tuple(str(s) for s in MACHINES["want"].statuses if s not in MACHINES["want"].terminal)


class BadQuery(ValueError):
    """A query parameter the page cannot use (names it and what is allowed): answered with 400."""


def plain(obj: Any) -> Any:
    """States and records as JSON-ready builtins."""
    if isinstance(obj, Record):
        return record_dict(obj)
    return msgspec.to_builtins(obj)


def record_dict(rec: Record) -> dict[str, Any]:
    """A record as the CLI's ``events --json`` prints it."""
    ev = rec.event
    return {"seq": rec.seq, "at": rec.at, "entity_kind": rec.entity_kind, "entity_id": rec.entity_id,
            "entity_seq": rec.entity_seq, "type": ev.event_name, "version": ev.event_version,
            "payload": msgspec.to_builtins(ev)}


def page(items: Sequence[T] | Iterable[T], offset: int, limit: int,
         convert: Callable[[T], Any] = plain) -> dict[str, Any]:
    """One page of ``items``: ``total``, ``offset``, ``limit`` and the converted ``items``."""
    seq = items if isinstance(items, Sequence) else list(items)
    return {"total": len(seq), "offset": offset, "limit": limit,
            "items": [convert(x) for x in seq[offset:offset + limit]]}


def int_param(value: str | None, name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    """A non-negative integer query parameter, or :class:`BadQuery` naming it."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadQuery(f"{name}={value!r} is not an integer") from None
    if n < lo or (hi is not None and n > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise BadQuery(f"{name}={n} must be {bound}")
    return n


def statuses_param(values: Collection[str], kind: str) -> set[str]:
    """Status filter values, checked against the kind's statuses (case-insensitive)."""
    known = {str(s).lower(): str(s) for s in MACHINES[kind].statuses}
    out: set[str] = set()
    for v in values:
        for part in v.split(","):
            if not part:
                continue
            s = known.get(part.lower())
            if s is None:
                raise BadQuery(f"status={part!r} is not a {kind} status; known: {', '.join(known.values())}")
            out.add(s)
    return out


# -- overview --------------------------------------------------------------------------------------------


def overview(obs: Observer, *, limit: int = 20) -> dict[str, Any]:
    """Counts per state, active wants with progress, runs in flight, failures, throughput."""
    w = obs.world
    active = heapq.nlargest(limit, obs.ids_in("want", ACTIVE_WANT))
    inflight = heapq.nlargest(limit, obs.ids_in("job_run", ("Queued", "Running")))
    failed = obs.ids_in("partition", ("Failed", "UpstreamFailed"))
    counts = obs.counts
    end, minutes = obs.throughput_window(30)
    return {
        "db": obs.db,
        "runtime_running": obs.runtime_running(),
        "last_seq": w.last_seq,
        "last_at": w.last_at,
        "counts": counts,
        "active_wants": {"total": sum(counts["want"][s] for s in ACTIVE_WANT),
                         "items": [want_progress(obs, w.wants[x]) for x in active]},
        "in_flight_runs": {"total": counts["job_run"]["Queued"] + counts["job_run"]["Running"],
                           "items": [plain(w.runs[x]) for x in inflight]},
        "failed_partitions": {"total": len(failed), "items": [plain(w.partitions[x]) for x in failed[::-1][:limit]]},
        "failed_runs": [plain(w.runs[r]) for r in reversed(obs.failed_runs) if r in w.runs][:10],
        "throughput": {"end": end, "minutes": minutes},
    }


def want_progress(obs: Observer, st: WantState) -> dict[str, Any]:
    """A want with how many of its partitions are Live."""
    parts = obs.world.partitions
    live = sum(1 for r in st.refs if (p := parts.get(r)) is not None and p.status is PartitionStatus.LIVE)
    return {**plain(st), "progress": {"live": live, "total": len(st.refs)}}


# -- lists -----------------------------------------------------------------------------------------------


def wants_list(obs: Observer, *, statuses: set[str], active: bool, q: str, offset: int, limit: int) -> dict[str, Any]:
    """Wants, newest first, filtered by status, activity and a search in id, source, comment and refs."""
    rows: Iterable[WantState] = reversed(obs.world.wants.values())
    if statuses:
        rows = (w for w in rows if w.status in statuses)
    if active:
        rows = (w for w in rows if not w.terminal)
    if q:
        by_ref = {wid for ref, wids in obs.wants_by_ref.items() if q in ref for wid in wids}
        rows = (w for w in rows if q in w.want_id or q in w.source or q in w.comment or w.want_id in by_ref)
    return page(list(rows), offset, limit, lambda st: want_progress(obs, st))


def partitions_list(obs: Observer, *, statuses: set[str], q: str, offset: int, limit: int) -> dict[str, Any]:
    """Partitions by ref, filtered by status and a substring of the ref."""
    parts = obs.world.partitions
    refs: Iterable[str] = obs.sorted_refs()
    if q:
        refs = (r for r in refs if q in r)
    if statuses:
        refs = (r for r in refs if parts[r].status in statuses)
    return page(refs if isinstance(refs, list) else list(refs), offset, limit, lambda r: plain(parts[r]))


def runs_list(obs: Observer, *, statuses: set[str], job: str, q: str, offset: int, limit: int) -> dict[str, Any]:
    """Job runs, newest first, filtered by status, job and a search in the id, reason and partitions."""
    rows: Iterable[JobRunState] = reversed(obs.world.runs.values())
    if statuses:
        rows = (r for r in rows if r.status in statuses)
    if job:
        rows = (r for r in rows if r.job == job)
    if q:
        rows = (r for r in rows if q in r.job_run_id or q in r.reason or any(q in p for p in r.planned))
    return page(list(rows), offset, limit)


# -- one entity --------------------------------------------------------------------------------------------


async def want_detail(obs: Observer, want_id: str, *, pstatuses: set[str], pq: str, poffset: int, plimit: int,
                      roffset: int, rlimit: int) -> dict[str, Any] | None:
    """A want: its partitions (paged, filtered), progress, the runs that served it, derived wants, history."""
    w = obs.world
    st = w.wants.get(want_id)
    if st is None:
        return None
    parts = [w.partition(r) for r in st.refs]
    by_status = statuses_of(parts)
    shown: Iterable[PartitionState] = parts
    if pq:
        shown = (p for p in shown if pq in p.ref)
    if pstatuses:
        shown = (p for p in shown if p.status in pstatuses)
    runs = obs.runs_by_want.get(want_id, [])
    history = await _history(obs, "want", want_id)
    return {
        "want": plain(st),
        "progress": {"live": by_status.get("Live", 0), "total": len(parts), "by_status": by_status},
        "partitions": page(list(shown), poffset, plimit),
        "runs": page(runs[::-1], roffset, rlimit, lambda r: plain(w.runs[r])),
        "parents": [plain(w.wants[p]) for p in st.parent_want_ids if p in w.wants],
        "derived": derived_tree(obs, want_id),
        "history": [record_dict(r) for r in history],
    }


async def partition_detail(obs: Observer, ref: str, *, roffset: int, rlimit: int) -> dict[str, Any] | None:
    """A partition: state, explain, generations and who built each, runs, wants, lineage, history."""
    w = obs.world
    if not obs.known_ref(ref):
        return None
    st = w.partition(ref)
    history = await _history(obs, "partition", ref)
    runs = obs.runs_by_ref.get(ref, [])
    wants = obs.wants_by_ref.get(ref, [])
    ex = await explain(w, None, ref, index=obs)
    return {
        "partition": plain(st),
        "explain": bounded_explanation(ex.to_dict()),
        "needs": list(w.needs(ref)),
        "generations": generations(history, w.runs),
        "runs": page(runs[::-1], roffset, rlimit, lambda r: plain(w.runs[r])),
        "wants": [{"want_id": x, "status": str(w.wants[x].status)} for x in wants[::-1][:50]],
        "wants_total": len(wants),
        "lineage": lineage(obs, ref),
        "history": [record_dict(r) for r in history],
    }


MAX_EXPLAIN_NODES = 200


def bounded_explanation(ex: dict[str, Any], budget: int = MAX_EXPLAIN_NODES) -> dict[str, Any]:
    """An explanation chain cut to ``budget`` partitions, breadth first; a cut level says how many it left out.

    ``explain`` follows up to 20 upstream refs per level, 20 levels deep: a wide backfill that waits on a wide
    upstream could otherwise put thousands of partitions on one page.
    """
    root = {**ex, "upstream": []}
    queue = deque([(ex, root)])
    shown = 1
    while queue:
        src, dst = queue.popleft()
        for up in src["upstream"]:
            if shown >= budget:
                break
            copy = {**up, "upstream": []}
            dst["upstream"].append(copy)
            queue.append((up, copy))
            shown += 1
        left = len(src["upstream"]) - len(dst["upstream"])
        if left:
            dst["details"] = [*dst["details"], f"… and {left} more upstream partition(s) not shown here"]
    return root


def generations(history: list[Record], runs: dict[str, JobRunState]) -> list[dict[str, Any]]:
    """Each build attempt of a partition (a lease): its generation, run, start, end and outcome; newest first."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for rec in history:
        name = rec.event.event_name
        if name == "PartitionBuilding":
            run_id = getattr(rec.event, "job_run_id", "")
            run = runs.get(run_id)
            cur = {"generation": len(out) + 1, "job_run_id": run_id, "job": run.job if run else None,
                   "started_at": rec.at, "ended_at": None, "outcome": "Building", "reason": ""}
            out.append(cur)
        elif cur is not None and cur["ended_at"] is None:
            cur["ended_at"] = rec.at
            cur["outcome"] = name.removeprefix("Partition")
            cur["reason"] = getattr(rec.event, "reason", "")
    return out[::-1]


async def run_detail(obs: Observer, run_id: str, *, poffset: int, plimit: int) -> dict[str, Any] | None:
    """A job run: its partitions, the chain of attempts, its events and the tail of its output."""
    w = obs.world
    run = w.runs.get(run_id)
    if run is None:
        return None
    chain = [run]
    back = run
    while back.retry_of is not None and back.retry_of in w.runs and len(chain) < 100:
        back = w.runs[back.retry_of]
        chain.insert(0, back)
    fwd = run_id
    while (nxt := obs.retried_by.get(fwd)) is not None and nxt in w.runs and len(chain) < 200:
        chain.append(w.runs[nxt])
        fwd = nxt
    refs = run.partitions or run.planned
    history = await _history(obs, "job_run", run_id)
    return {
        "run": plain(run),
        "attempts": [plain(r) for r in chain],
        "partitions": page([w.partition(r) for r in refs], poffset, plimit),
        "wants": [{"want_id": x, "status": str(w.wants[x].status)} for x in run.wants if x in w.wants],
        "history": [record_dict(r) for r in history],
        "output": {"stdout": await output_tail(run.stdout_path, run_id, "stdout"),
                   "stderr": await output_tail(run.stderr_path, run_id, "stderr")},
    }


async def output_tail(path: str | None, run_id: str, stream: str) -> dict[str, Any] | None:
    """The last :data:`OUTPUT_TAIL` bytes of a run's output file, or ``None`` if it has none.

    Only a file named ``<run id>.<stream>`` is read (how the runtime names them): a path from the log never
    makes the server read an arbitrary file.
    """
    if not path:
        return None
    if Path(path).name != f"{run_id}.{stream}":
        return {"path": path, "text": "", "size": 0, "truncated": False,
                "error": f"not shown: the file is not named {run_id}.{stream}"}
    try:
        size, data = await anyio.to_thread.run_sync(_tail, path)
    except OSError as e:
        return {"path": path, "text": "", "size": 0, "truncated": False, "error": e.strerror or str(e)}
    return {"path": path, "text": data.decode("utf-8", "replace"), "size": size, "truncated": size > len(data),
            "error": None}


def _tail(path: str) -> tuple[int, bytes]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - OUTPUT_TAIL))
        return size, f.read(OUTPUT_TAIL)


async def _history(obs: Observer, kind: str, entity_id: str) -> list[Record]:
    if obs.log is None or obs.log.closed:
        return []
    return await obs.log.history(kind, entity_id)


# -- events ----------------------------------------------------------------------------------------------


def _matches(rec: Record, kinds: Collection[str], types: Collection[str], entity: str) -> bool:
    return ((not kinds or rec.entity_kind in kinds) and (not types or rec.event.event_name in types)
            and (not entity or rec.entity_id == entity))


async def events_page(obs: Observer, *, kinds: Collection[str], types: Collection[str], entity: str,
                      before_seq: int | None, from_seq: int | None, limit: int) -> dict[str, Any]:
    """Committed events matching the filters: newest first before ``before_seq`` (default: the newest), or,
    with ``from_seq``, oldest first from there. Bounded work: a filtered page scans at most
    :data:`EVENTS_SCAN_BUDGET` events and says where it stopped (``scanned_to``), so the next page goes on."""
    last = obs.world.last_seq
    if entity:
        items = await _entity_events(obs, entity, kinds)
        items = [r for r in items if _matches(r, (), types, "")]
        if from_seq is not None:
            mine = [r for r in items if r.seq >= from_seq][:limit]
        else:
            hi = before_seq if before_seq is not None else last + 1
            mine = [r for r in items if r.seq < hi][-limit:][::-1]
        return _events_result(mine, from_seq, limit, complete=True, last=last)
    if from_seq is not None:
        return await _events_forward(obs, kinds, types, from_seq, limit, last)
    hi = (before_seq if before_seq is not None else last + 1) - 1  # inclusive upper bound
    got: list[Record] = []
    recent = obs.recent
    lo_scanned = hi + 1
    if recent and recent[0].seq <= hi + 1:
        for rec in reversed(recent):
            if rec.seq > hi:
                continue
            lo_scanned = rec.seq
            if _matches(rec, kinds, types, ""):
                got.append(rec)
                if len(got) >= limit:
                    break
        if len(got) < limit:
            lo_scanned = min(lo_scanned, recent[0].seq)
        hi = lo_scanned - 1
    budget = EVENTS_SCAN_BUDGET
    window = limit if not kinds and not types else 5000
    while len(got) < limit and hi >= 1 and budget > 0 and obs.log is not None and not obs.log.closed:
        lo = max(1, hi - window + 1)
        chunk = [r async for r in obs.log.read(lo, until_seq=hi, kinds=kinds or None, types=types or None)]
        got.extend(reversed(chunk[-(limit - len(got)):]))
        budget -= hi - lo + 1
        lo_scanned = lo
        hi = lo - 1
        window = min(window * 4, 100_000)
    complete = hi < 1 or not (len(got) < limit)
    return _events_result(got[:limit], None, limit, complete=complete, last=last,
                          scanned_to=None if complete else lo_scanned)


async def _events_forward(obs: Observer, kinds: Collection[str], types: Collection[str], from_seq: int, limit: int,
                          last: int) -> dict[str, Any]:
    got: list[Record] = []
    recent = obs.recent
    if recent and recent[0].seq <= from_seq:
        got = [r for r in recent if r.seq >= from_seq and _matches(r, kinds, types, "")][:limit]
        return _events_result(got, from_seq, limit, complete=True, last=last)
    if obs.log is not None and not obs.log.closed:
        scanned = 0
        lo = from_seq
        window = limit if not kinds and not types else 5000
        while len(got) < limit and lo <= last and scanned < EVENTS_SCAN_BUDGET:
            hi = min(last, lo + window - 1)
            got.extend([r async for r in obs.log.read(lo, until_seq=hi, kinds=kinds or None, types=types or None)])
            scanned += hi - lo + 1
            lo = hi + 1
            window = min(window * 4, 100_000)
        if len(got) < limit and lo <= last:
            return _events_result(got[:limit], from_seq, limit, complete=False, last=last, scanned_to=lo - 1)
    return _events_result(got[:limit], from_seq, limit, complete=True, last=last)


def _events_result(items: list[Record], from_seq: int | None, limit: int, *, complete: bool, last: int,
                   scanned_to: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"items": [record_dict(r) for r in items], "limit": limit, "last_seq": last,
                           "order": "ascending" if from_seq is not None else "descending",
                           "next_before_seq": None, "next_from_seq": None, "scanned_to": scanned_to}
    if from_seq is not None:
        if len(items) >= limit:
            out["next_from_seq"] = items[-1].seq + 1
        elif scanned_to is not None:
            out["next_from_seq"] = scanned_to + 1
    elif len(items) >= limit and items:
        out["next_before_seq"] = items[-1].seq
    elif scanned_to is not None and scanned_to > 1:
        out["next_before_seq"] = scanned_to
    return out


async def _entity_events(obs: Observer, entity: str, kinds: Collection[str]) -> list[Record]:
    """One entity's events: ids of wants, refs and run ids are told apart by the World (or tried in turn)."""
    w = obs.world
    candidates = [k for k in ("want", "partition", "job_run") if not kinds or k in kinds]
    tables: dict[str, dict[str, Any]] = {"want": w.wants, "partition": w.partitions, "job_run": w.runs}
    known = [k for k in candidates if entity in tables[k]]
    out: list[Record] = []
    for kind in known:
        out.extend(await _history(obs, kind, entity))
    out.sort(key=lambda r: r.seq)
    return out
