"""Reports of a scenario run: a text summary, JSON, and a self-contained HTML page.

The HTML page has no external references (inline CSS and SVG, no scripts, no fonts to fetch): a Gantt-like
timeline of job runs per partition with collisions and crashes marked, per-want latency bars, the invariant
results and the expectations. All three renderings are deterministic functions of a
:class:`~scenarios._result.ScenarioResult`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from typing import Any

from ._result import RunSpan, ScenarioResult, runs_by_partition

__all__ = ["render_html", "render_json", "render_text"]

_STATUS_COLOURS = {
    "Succeeded": "#2e9e5b",
    "Failed": "#d64545",
    "DepMiss": "#8e6bd1",
    "Canceled": "#e39b2d",
    "Lost": "#8a8f98",
    "Running": "#3b7dd8",
    "Queued": "#b9c6d8",
}
_WANT_COLOURS = {
    "Successful": "#2e9e5b",
    "Failed": "#d64545",
    "UpstreamFailed": "#b3476b",
    "Canceled": "#e39b2d",
    "Expired": "#8a8f98",
}


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if float(seconds).is_integer():
        return f"{int(seconds)} s"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"


# --------------------------------------------------------------------------------------------------------
# Text


def render_text(r: ScenarioResult, *, verbose: bool = False) -> str:
    """A plain-text summary (no colour; the CLI adds its own)."""
    m = r.metrics
    verdict = "PASS" if r.ok else "FAIL"
    out = [f"scenario {r.name} (policy {r.policy}, seed {r.seed}): {verdict}"]
    if r.description:
        out.append(f"  {r.description}")
    out.append(f"  virtual time 0 .. {_s(r.end_time)}; {len(r.events)} events, {m.job_runs} job runs, "
               f"{m.crashes} crash{'es' if m.crashes != 1 else ''}")
    if r.stopped:
        out.append(f"  stopped early: {r.stopped}")
    out.append(
        f"metrics: job runs {m.job_runs} | duplicate work {m.duplicate_work} | wasted run time "
        f"{_s(m.wasted_run_time)} | collisions {m.collisions} | latency p50 {_s(m.latency_p50)} "
        f"p95 {_s(m.latency_p95)} max {_s(m.latency_max)}"
    )
    runs = ", ".join(f"{k} {v}" for k, v in sorted(m.runs_by_status.items()) if v)
    out.append(f"runs: {runs or 'none'}")
    out.append("wants:")
    for w in r.wants:
        label = w.name or ("(derived)" if w.source.startswith(("job_run:", "static_deps:", "partition:")) else "")
        sla = " SLA missed" if w.sla_missed else ""
        out.append(f"  {label:<12} {w.want_id}  {w.status:<15} {_s(w.latency):>9}{sla}  [{', '.join(w.refs)}]")
    for crash in r.crashes:
        i3 = "I3 ok" if crash.i3_ok else "I3 VIOLATED: " + "; ".join(crash.i3_diff[:3])
        out.append(f"crash at {_s(crash.at)} ({crash.trigger}): log at seq {crash.last_seq}, lost runs "
                   f"{', '.join(crash.lost_runs) or 'none'}; {i3}")
    if r.violations:
        out.append(f"invariants: {len(r.violations)} violation(s)")
        for v in r.violations[:20]:
            out.append(f"  {v}")
    else:
        out.append("invariants: I1-I7 hold")
    out.append("expectations:")
    if not r.checks:
        out.append("  (none)")
    for c in r.checks:
        out.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: expected {c.expected}, got {c.actual}")
    if verbose:
        out.append("notes:" if r.notes else "notes: none")
        out.extend(f"  {n}" for n in r.notes)
        out.append("timeline:")
        out.extend(f"  {t}" for t in r.timeline)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------------
# JSON


def render_json(r: ScenarioResult | Sequence[ScenarioResult], *, events: bool = False, timing: bool = False) -> str:
    """JSON of one result or a list of them (``events`` includes every event row)."""
    if isinstance(r, ScenarioResult):
        data: Any = r.to_dict(events=events, timing=timing)
    else:
        data = [x.to_dict(events=events, timing=timing) for x in r]
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


# --------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2430;
background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px;
margin-left:8px}
.pass{background:#2e9e5b}.fail{background:#d64545}
.meta{color:#5a6372}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{color:#5a6372;font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #dde2ea;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
.ok{color:#2e9e5b;font-weight:600}.bad{color:#d64545;font-weight:600}
svg{background:#fff;border:1px solid #dde2ea;border-radius:6px}
svg text{font:11px system-ui,sans-serif;fill:#1f2430}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
code{background:#eef1f5;padding:0 3px;border-radius:3px}
details{margin-top:8px}
"""


def _svg_text(x: float, y: float, text: str, *, anchor: str = "start", fill: str | None = None,
              size: int | None = None) -> str:
    style = f' style="fill:{fill}"' if fill else ""
    fs = f' font-size="{size}"' if size else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{style}{fs}>{escape(text)}</text>'


def _ticks(end: float, n: int = 8) -> list[float]:
    """Round tick positions from 0 to ``end``, about ``n`` of them."""
    if end <= 0:
        return [0.0]
    raw = end / n
    base = 10.0 ** math.floor(math.log10(raw))
    step = next(base * k for k in (1, 2, 5, 10) if raw <= base * k)
    count = int(end / step + 1e-9)
    return [i * step for i in range(count + 1)]


def _gantt(r: ScenarioResult) -> str:
    by_part = runs_by_partition(r.runs)
    parts = sorted(set(by_part) | set(r.partitions))
    label_w, width, row_h, top = 190, 1180, 22, 34
    plot_w = width - label_w - 20
    end = max([r.end_time, *(x.ended_at or 0 for x in r.runs), *(c.at for c in r.crashes)]) or 1.0
    height = top + row_h * max(1, len(parts)) + 30

    def x(t: float) -> float:
        return label_w + plot_w * (t / end)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="job runs per partition">']
    for t in _ticks(end):
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 6}" x2="{x(t):.1f}" y2="{height - 24}" stroke="#eef1f5"/>')
        out.append(_svg_text(x(t), height - 10, _s(t), anchor="middle", fill="#5a6372"))
    for i, ref in enumerate(parts):
        y = top + i * row_h
        if i % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f6f8fb"/>')
        status = r.partitions.get(ref, "Missing")
        out.append(f'<text x="6" y="{y + 15}"><title>{escape(ref)}: {escape(status)}</title>'
                   f'{escape(ref if len(ref) <= 26 else ref[:24] + "…")}</text>')
        for run in by_part.get(ref, []):
            out.extend(_bar(run, ref, y, row_h, x, end))
    for c in r.crashes:
        cx = x(c.at)
        out.append(f'<line x1="{cx:.1f}" y1="{top - 14}" x2="{cx:.1f}" y2="{height - 24}" stroke="#d64545" '
                   f'stroke-width="2" stroke-dasharray="5,3"><title>crash at {_s(c.at)}: {escape(c.trigger)}'
                   f'</title></line>')
        out.append(_svg_text(cx + 3, top - 18, f"crash {_s(c.at)}", fill="#d64545"))
    out.append("</svg>")
    return "".join(out)


def _bar(run: RunSpan, ref: str, y: float, row_h: int, x: Any, end: float) -> list[str]:
    out: list[str] = []
    colour = _STATUS_COLOURS.get(run.status, "#3b7dd8")
    tip = (f"{run.job_run_id} ({run.job}, attempt {run.attempt}) {run.status}; queued {_s(run.queued_at)}, "
           f"started {_s(run.started_at)}, ended {_s(run.ended_at)}")
    if run.reason:
        tip += f"; {run.reason}"
    mid = y + row_h / 2
    skipped = dict(run.skipped)
    if ref in run.partitions and run.started_at is not None:
        stop = run.worked_until if run.worked_until is not None else end
        if run.queued_at < run.started_at:
            out.append(f'<line x1="{x(run.queued_at):.1f}" y1="{mid:.1f}" x2="{x(run.started_at):.1f}" '
                       f'y2="{mid:.1f}" stroke="{colour}" stroke-dasharray="2,2"/>')
        w = max(2.0, x(stop) - x(run.started_at))
        out.append(f'<rect x="{x(run.started_at):.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="3" '
                   f'fill="{colour}" fill-opacity="0.85"><title>{escape(tip)}</title></rect>')
        if w > 60:
            out.append(_svg_text(x(run.started_at) + 4, y + 15, run.job_run_id, fill="#fff"))
    elif ref in skipped:
        at = run.started_at if run.started_at is not None else run.queued_at
        cx, cy = x(at), mid
        out.append(f'<g stroke="#d64545" stroke-width="2"><title>collision: {escape(run.job_run_id)} skipped '
                   f'{escape(ref)}, held by {escape(skipped[ref])}</title>'
                   f'<line x1="{cx - 5:.1f}" y1="{cy - 5:.1f}" x2="{cx + 5:.1f}" y2="{cy + 5:.1f}"/>'
                   f'<line x1="{cx - 5:.1f}" y1="{cy + 5:.1f}" x2="{cx + 5:.1f}" y2="{cy - 5:.1f}"/></g>')
    else:  # planned but not built by this run: show how long it waited for it (until it started or ended)
        waited = run.started_at if run.started_at is not None else run.ended_at
        at = waited if waited is not None else end
        out.append(f'<circle cx="{x(run.queued_at):.1f}" cy="{mid:.1f}" r="3" fill="none" stroke="{colour}">'
                   f'<title>{escape(tip)}</title></circle>')
        if at > run.queued_at:
            out.append(f'<line x1="{x(run.queued_at):.1f}" y1="{mid:.1f}" x2="{x(at):.1f}" y2="{mid:.1f}" '
                       f'stroke="{colour}" stroke-dasharray="2,3"/>')
    if run.deferrals and ref in run.planned:
        cx = x(run.queued_at)
        out.append(f'<path d="M{cx:.1f},{y + 2} l5,{row_h / 2 - 2:.1f} l-5,{row_h / 2 - 2:.1f} l-5,'
                   f'-{row_h / 2 - 2:.1f} z" fill="none" stroke="#e39b2d" stroke-width="1.5">'
                   f'<title>collision: {escape(run.job_run_id)} deferred {run.deferrals} time(s)</title></path>')
    return out


def _latency_chart(r: ScenarioResult) -> str:
    wants = r.wants
    label_w, width, row_h, top = 190, 1180, 20, 10
    plot_w = width - label_w - 150
    end = max([r.end_time, *(w.ended_at or 0 for w in wants)]) or 1.0
    height = top + row_h * max(1, len(wants)) + 26

    def x(t: float) -> float:
        return label_w + plot_w * (t / end)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="want latency">']
    for t in _ticks(end):
        out.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{height - 22}" stroke="#eef1f5"/>')
        out.append(_svg_text(x(t), height - 8, _s(t), anchor="middle", fill="#5a6372"))
    for i, w in enumerate(wants):
        y = top + i * row_h
        label = f"{w.name} ({w.want_id})" if w.name else w.want_id
        out.append(_svg_text(6, y + 14, label))
        colour = _WANT_COLOURS.get(w.status, "#3b7dd8")
        stop = w.ended_at if w.ended_at is not None else end
        width_px = max(2.0, x(stop) - x(w.created_at))
        tip = f"{w.want_id} {w.status}: created {_s(w.created_at)}, ended {_s(w.ended_at)}, latency {_s(w.latency)}"
        if w.reason:
            tip += f"; {w.reason}"
        out.append(f'<rect x="{x(w.created_at):.1f}" y="{y + 3}" width="{width_px:.1f}" height="{row_h - 6}" '
                   f'rx="3" fill="{colour}" fill-opacity="{0.85 if w.ended_at is not None else 0.35}">'
                   f'<title>{escape(tip)}</title></rect>')
        out.append(_svg_text(x(stop) + 6, y + 14, f"{w.status} {_s(w.latency)}", fill="#5a6372"))
    out.append("</svg>")
    return "".join(out)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], raw: bool = False) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def render_html(r: ScenarioResult) -> str:
    """A self-contained HTML report (no scripts, no network)."""
    m = r.metrics
    verdict = '<span class="badge pass">PASS</span>' if r.ok else '<span class="badge fail">FAIL</span>'
    cards = [
        ("job runs", str(m.job_runs)), ("duplicate work", str(m.duplicate_work)),
        ("wasted run time", _s(m.wasted_run_time)), ("collisions", str(m.collisions)),
        ("crashes", str(m.crashes)), ("latency p50", _s(m.latency_p50)), ("latency p95", _s(m.latency_p95)),
        ("events", str(len(r.events))), ("virtual time", _s(r.end_time)),
    ]
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(s)}</span>' for s, c in _STATUS_COLOURS.items())
    legend += ('<span><b style="color:#d64545">✕</b> skipped (shrink collision)</span>'
               '<span><b style="color:#e39b2d">◇</b> deferred</span>'
               '<span><b style="color:#d64545">┆</b> crash</span>')
    inv = ('<p class="ok">I1-I7 hold throughout (I3 checked at every crash and at the end).</p>' if not r.violations
           else _table(["invariant", "seq", "message", "entities"],
                       [[v.invariant, str(v.seq or ""), v.message, ", ".join(v.entities)] for v in r.violations]))
    checks = _table(
        ["", "expectation", "expected", "actual"],
        [[('<span class="ok">ok</span>' if c.ok else '<span class="bad">FAIL</span>'), escape(c.name),
          escape(c.expected), escape(c.actual)] for c in r.checks],
        raw=True,
    ) if r.checks else "<p>No expectations.</p>"
    crashes = _table(
        ["at", "trigger", "log seq", "lost runs", "requeued", "I3"],
        [[_s(c.at), c.trigger, str(c.last_seq), ", ".join(c.lost_runs) or "-", ", ".join(c.requeued) or "-",
          "ok" if c.i3_ok else "VIOLATED: " + "; ".join(c.i3_diff[:3])] for c in r.crashes],
    ) if r.crashes else "<p>No crashes.</p>"
    wants = _table(
        ["name", "want", "status", "created", "ended", "latency", "refs", "source"],
        [[w.name or "", w.want_id, w.status + (" (SLA missed)" if w.sla_missed else ""), _s(w.created_at),
          _s(w.ended_at), _s(w.latency), ", ".join(w.refs), w.source] for w in r.wants],
    )
    runs = _table(
        ["run", "job", "attempt", "status", "queued", "started", "ended", "built", "skipped", "reason"],
        [[x.job_run_id, x.job, str(x.attempt), x.status, _s(x.queued_at), _s(x.started_at), _s(x.ended_at),
          ", ".join(x.partitions), ", ".join(f"{a} ({b})" for a, b in x.skipped), x.reason] for x in r.runs],
    )
    events = _table(
        ["seq", "at", "type", "entity", "entity seq"],
        [[str(e.seq), _s(e.at), e.type, f"{e.kind} {e.entity_id}", str(e.entity_seq)] for e in r.events],
    )
    timeline = "".join(f"<li><code>{escape(t)}</code></li>" for t in r.timeline)
    notes = "".join(f"<li>{escape(n)}</li>" for n in r.notes)
    card_html = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in cards)
    stopped = f'<p class="bad">Stopped early: {escape(r.stopped)}</p>' if r.stopped else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>scenario {escape(r.name)}: {"PASS" if r.ok else "FAIL"}</title>
<style>{_CSS}</style></head><body>
<h1>scenario {escape(r.name)} {verdict}</h1>
<div class="meta">policy <code>{escape(r.policy)}</code> · seed <code>{r.seed}</code> · {escape(r.description)}</div>
{stopped}
<div class="cards">{card_html}</div>
<h2>Job runs per partition</h2>
<div class="legend">{legend}</div>
{_gantt(r)}
<h2>Want latency</h2>
{_latency_chart(r)}
<h2>Invariants</h2>
{inv}
<h2>Expectations</h2>
{checks}
<h2>Crashes</h2>
{crashes}
<h2>Wants</h2>
{wants}
<h2>Job runs</h2>
{runs}
<h2>Timeline</h2>
<ul>{timeline or "<li>empty</li>"}</ul>
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
<details><summary>All {len(r.events)} events</summary>{events}</details>
</body></html>
"""
