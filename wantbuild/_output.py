"""What the CLI prints: rich tables and colours for people, JSON for scripts.

Colours only appear when the stream is a terminal (rich decides, and honours ``NO_COLOR``); when it is not,
lines are not wrapped at 80 columns either, so piped output stays greppable. Everything a script may want is
also available as JSON (``--json``), built from the same plain values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors import MACHINES, JobRunState, PartitionSet, PartitionState, Stale, WantState, World
from eventlog import Command, Lease, Record
from supervisor import Explanation

_STYLES = {
    # done
    "Successful": "green", "Live": "green", "Succeeded": "green",
    # failed
    "Failed": "bold red", "UpstreamFailed": "red",
    # stopped
    "Canceled": "magenta", "Expired": "magenta", "Lost": "magenta", "Tainted": "yellow", "DepMiss": "yellow",
    # moving
    "Building": "cyan", "Running": "cyan", "Queued": "cyan",
    "UpstreamBuilding": "blue", "UpstreamWaiting": "blue",
}


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); no wrapping at 80 columns when it is not a terminal."""
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:
        c = Console(stderr=stderr, highlight=False, width=max(c.width, 200), soft_wrap=True)
    return c


def status_text(status: str) -> Text:
    return Text(str(status), style=_STYLES.get(str(status), ""))


def append_counts(text: Text, counts: Mapping[str, int]) -> None:
    """``12 Live, 3 Failed``: counts per status, largest first, statuses coloured."""
    for i, (status, n) in enumerate(sorted(counts.items(), key=lambda kv: -kv[1])):
        if i:
            text.append(", ")
        text.append(f"{n} ")
        text.append_text(status_text(status))


def fmt_time(at: float | None) -> str:
    """Wall-clock times as local ISO times; small numbers (a scenario's virtual clock) as seconds."""
    if at is None:
        return "-"
    if at >= 1e8:
        return dt.datetime.fromtimestamp(at).isoformat(sep=" ", timespec="milliseconds")
    return f"t={at:.3f}s"


def short(items: Sequence[str], limit: int = 3) -> str:
    if isinstance(items, PartitionSet):
        return items.describe(limit)
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])}, ... (+{len(items) - limit})"


# -- JSON ------------------------------------------------------------------------------------------------


def to_plain(obj: Any) -> Any:
    """States, records, explanations and containers of them as JSON-ready builtins."""
    if isinstance(obj, Record):
        return record_dict(obj)
    if isinstance(obj, Explanation):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return msgspec.to_builtins(obj, enc_hook=_encode)


def _encode(obj: Any) -> Any:
    if isinstance(obj, PartitionSet):  # a range want's refs: the set, not a million strings
        return obj.to_json()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def dumps(obj: Any, *, indent: bool = True) -> str:
    return json.dumps(to_plain(obj), indent=2 if indent else None, ensure_ascii=False)


def record_dict(rec: Record) -> dict[str, Any]:
    ev = rec.event
    return {
        "seq": rec.seq, "at": rec.at, "entity_kind": rec.entity_kind, "entity_id": rec.entity_id,
        "entity_seq": rec.entity_seq, "type": ev.event_name, "version": ev.event_version,
        "payload": msgspec.to_builtins(ev),
    }


# -- tables ----------------------------------------------------------------------------------------------


def _table(title: str | None) -> Table:
    return Table(title=title, title_justify="left", title_style="italic", box=box.SIMPLE_HEAD, show_edge=False,
                 pad_edge=False)


def counts_table(counts: Mapping[str, Mapping[str, int]], title: str | None = None) -> Table:
    """Entities per status, one row per kind, only the statuses that occur (all zero: "none")."""
    t = _table(title)
    t.add_column("entity")
    t.add_column("total", justify="right")
    t.add_column("by status")
    for kind in MACHINES:
        per = counts.get(kind, {})
        parts = Text()
        for status, n in per.items():
            if n:
                if parts:
                    parts.append("  ")
                parts.append_text(status_text(status))
                parts.append(f" {n}")
        t.add_row(kind, str(sum(per.values())), parts if parts else Text("none", style="dim"))
    return t


def wants_table(wants: Iterable[WantState], title: str | None = None) -> Table:
    t = _table(title)
    for col in ("want", "status", "refs", "source", "created", "reason"):
        t.add_column(col, overflow="fold")
    for w in wants:
        reason = w.reason + (" (SLA missed)" if w.sla_missed else "")
        t.add_row(w.want_id, status_text(w.status), short(w.refs), w.source, fmt_time(w.created_at), reason)
    return t


def runs_table(runs: Iterable[JobRunState], title: str | None = None) -> Table:
    t = _table(title)
    for col in ("run", "job", "status", "attempt", "partitions", "reason"):
        t.add_column(col, overflow="fold")
    for r in runs:
        t.add_row(r.job_run_id, r.job, status_text(r.status), f"{r.attempt}/{r.max_attempts}",
                  short(r.partitions or r.planned), r.reason)
    return t


def partitions_table(parts: Iterable[PartitionState], world: World, title: str | None = None) -> Table:
    t = _table(title)
    for col in ("partition", "status", "generation", "lease / built by", "reason"):
        t.add_column(col, overflow="fold")
    for p in parts:
        holder = p.lease if p.lease else (p.built_by or "")
        needs = world.needs(p.ref)
        reason = p.reason or (f"waiting on {short(needs)} (missing for {p.waiting_run})" if needs else "")
        t.add_row(p.ref, status_text(p.status), str(p.generation), holder, reason)
    return t


def stale_table(found: Iterable[Stale], title: str | None = None) -> Table:
    """Stale partitions: which generation, built by which run, and which inputs are newer now."""
    t = _table(title)
    for col in ("partition", "generation", "built by", "job", "inputs rebuilt since (read -> now)"):
        t.add_column(col, overflow="fold")
    for s in found:
        newer = ", ".join(f"{r} @{a} -> @{b}" for r, (a, b) in sorted(s.newer.items()))
        t.add_row(s.ref, str(s.generation), s.built_by, s.job, newer)
    return t


def command_what(cmd: Command) -> str:
    """What a command asks, in a few words: ``want daily/1, daily/2``, ``cancel w-00000003``..."""
    p = cmd.payload
    if isinstance(p.get("refs"), list):
        return f"{cmd.name} {short([str(r) for r in (*p.get('specs', ()), *p['refs'])])}"
    if "name" in p and cmd.name.startswith("schedule_"):
        return f"{cmd.name.replace('_', ' ')} {p['name']}"
    if "want_id" in p:
        return f"{cmd.name} {p['want_id']}"
    return cmd.name


def command_note(cmd: Command) -> str:
    """One line about a command that did not take effect (queued, or rejected with its error)."""
    head = f"command {cmd.id} ({command_what(cmd)}), submitted {fmt_time(cmd.submitted_at)},"
    if cmd.state == "pending":
        return f"{head} is queued: a runtime applies it when it next opens the log"
    return f"{head} was rejected by the runtime: {cmd.error}"


def command_dict(cmd: Command) -> dict[str, Any]:
    return {"id": cmd.id, "name": cmd.name, "payload": cmd.payload, "state": cmd.state,
            "submitted_at": cmd.submitted_at, "completed_at": cmd.completed_at, "result": cmd.result,
            "error": cmd.error}


def commands_table(commands: Iterable[Command], title: str | None = None) -> Table:
    t = _table(title)
    for col in ("command", "state", "asks", "submitted", "error"):
        t.add_column(col, overflow="fold")
    for c in commands:
        state = Text(c.state, style={"failed": "bold red", "pending": "cyan"}.get(c.state, "green"))
        t.add_row(str(c.id), state, command_what(c), fmt_time(c.submitted_at), c.error or "")
    return t


def events_table(records: Iterable[Record], *, max_payload: int | None = None) -> Table:
    """One row per event; payloads longer than ``max_payload`` characters are cut (a 100,000-ref WantCreated)."""
    t = _table(None)
    for col in ("seq", "at", "entity", "type", "payload"):
        t.add_column(col, overflow="fold")
    for rec in records:
        t.add_row(*event_cells(rec, max_payload=max_payload))
    return t


def event_cells(rec: Record, *, max_payload: int | None = None) -> tuple[str, str, str, str, str]:
    payload = msgspec.json.encode(rec.event).decode()
    if max_payload is not None and len(payload) > max_payload:
        payload = f"{payload[:max_payload]}... ({len(payload)} characters; --all shows them)"
    return (str(rec.seq), fmt_time(rec.at), f"{rec.entity_kind}:{rec.entity_id}#{rec.entity_seq}",
            rec.event.event_name, payload)


def event_line(rec: Record) -> Text:
    seq, at, entity, typ, payload = event_cells(rec)
    line = Text(f"{seq:>6}  {at}  ")
    line.append(typ, style="bold")
    line.append(f"  {entity}  ")
    line.append(payload, style="dim")
    return line


def explanation_text(ex: Explanation, indent: int = 0) -> Text:
    """The explanation chain, indented per upstream level, statuses coloured."""
    out = Text()
    pad = "  " * indent
    out.append(f"{pad}{ex.ref} [")
    out.append_text(status_text(ex.status))
    out.append(f"]: {ex.summary}\n")
    for d in ex.details:
        out.append(f"{pad}  - {d}\n", style="dim" if indent else "")
    for up in ex.upstream:
        out.append_text(explanation_text(up, indent + 1))
    return out


def world_summary(world: World) -> dict[str, Any]:
    """The plain summary ``status`` and ``replay`` print: counts, failures, in-flight runs, active wants."""
    failed_parts = sorted((p for p in world.partitions.values() if p.status in ("Failed", "UpstreamFailed")),
                          key=lambda p: p.ref)
    failed_runs = sorted((r for r in world.runs.values() if r.status == "Failed"), key=lambda r: r.job_run_id)
    return {
        "last_seq": world.last_seq,
        "last_at": world.last_at,
        "counts": world.counts(),
        "active_wants": sorted((w for w in world.active_wants()), key=lambda w: w.want_id),
        "in_flight_runs": sorted(world.in_flight_runs(), key=lambda r: r.job_run_id),
        "failed_partitions": failed_parts,
        "failed_runs": failed_runs,
        "restored": None if world.restored is None else world.restored.to_dict(),
    }


def print_summary(out: Console, world: World, summary: Mapping[str, Any], *, heading: str) -> None:
    out.print(Text(heading, style="bold"))
    restored = summary.get("restored")
    if restored is not None:
        if restored["snapshot_seq"] is not None:
            out.print(Text(f"loaded the snapshot at seq {restored['snapshot_seq']}, then replayed "
                           f"{restored['tail_events']} events", style="dim"))
        for skip in restored["skipped"]:
            out.print(Text(f"snapshot at seq {skip['seq']} skipped: {skip['reason']}", style="yellow"))
    out.print(counts_table(summary["counts"]))
    if summary["active_wants"]:
        out.print()
        out.print(wants_table(summary["active_wants"], title="active wants"))
    if summary["in_flight_runs"]:
        out.print()
        out.print(runs_table(summary["in_flight_runs"], title="in-flight runs"))
    if summary["failed_partitions"]:
        out.print()
        out.print(partitions_table(summary["failed_partitions"], world, title="failed partitions"))
    if summary["failed_runs"]:
        out.print()
        out.print(runs_table(summary["failed_runs"][-10:], title="failed runs (last 10)"))


def lease_text(lease: Lease) -> str:
    """``epoch 3, 7.2 s left``: a writer lease's state (empty for a SQLite lock, which lasts as long as its process)."""
    parts = [f"epoch {lease.epoch}"] if lease.epoch else []
    if lease.expires_in is not None:
        parts.append(f"{lease.expires_in:.1f} s left unless renewed")
    return ", ".join(parts)
