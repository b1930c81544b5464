"""Driving a runtime from the CLI: a live progress display while it builds, and the outcome afterwards.

The display polls the runtime's World (ten times a second): it is a view, never part of the build, and polling
keeps it independent of how fast events commit. It only appears when stderr is a terminal; scripts get the
outcome alone (as JSON with ``--json``).
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from actors import JobRunState, PartitionStatus, WantState, WantStatus
from supervisor import Runtime

from ._output import append_counts, short, wants_table


def is_derived(want: WantState) -> bool:
    """Created by the supervisor (``job_run:<id>``, ``static_deps:<ref>``...), not by a user (api, cli, ...)."""
    return ":" in want.source


@dataclass
class Session:
    """What one CLI invocation did with a runtime: the wants and runs it saw come and go.

    The progress figures (``live``, ``total``, ``run_counts``, ``active``, ``want_count``) are kept up to date by
    a hook, one step per committed event, so the display costs nothing that grows with the wants.
    """

    rt: Runtime
    old_wants: frozenset[str]
    """Wants that were already terminal when the runtime opened (not part of this session)."""
    old_runs: frozenset[str]
    started: float = field(default_factory=time.monotonic)
    refs_seen: set[str] = field(default_factory=set)
    live: int = 0
    run_counts: Counter[str] = field(default_factory=Counter)
    active: int = 0
    want_count: int = 0

    @classmethod
    def begin(cls, rt: Runtime) -> Session:
        w = rt.world
        session = cls(rt, frozenset(i for i, s in w.wants.items() if s.terminal), frozenset(w.runs))
        for want in session.wants():
            session._count_want(want)
        rt.add_hook(session._on_commit)
        return session

    @property
    def total(self) -> int:
        return len(self.refs_seen)

    def _count_want(self, want: WantState) -> None:
        self.want_count += 1
        self.active += not want.terminal
        world = self.rt.world
        for ref in want.refs:
            if ref not in self.refs_seen:
                self.refs_seen.add(ref)
                self.live += world.partition(ref).status is PartitionStatus.LIVE

    def _on_commit(self, rec: Any, old: Any, new: Any) -> None:
        kind = rec.entity_kind
        if kind == "partition":
            if new.ref in self.refs_seen:
                was = old is not None and old.status is PartitionStatus.LIVE
                self.live += (new.status is PartitionStatus.LIVE) - was
        elif kind == "job_run":
            if old is not None:
                self.run_counts[str(old.status)] -= 1
            self.run_counts[str(new.status)] += 1
        elif kind != "want":
            return
        elif old is None:
            self._count_want(new)
        elif new.terminal and not old.terminal:
            self.active -= 1

    def wants(self) -> list[WantState]:
        return sorted((s for i, s in self.rt.world.wants.items() if i not in self.old_wants),
                      key=lambda s: s.want_id)

    def runs(self) -> list[JobRunState]:
        return sorted((s for i, s in self.rt.world.runs.items() if i not in self.old_runs),
                      key=lambda s: s.job_run_id)

    def refs(self) -> list[str]:
        seen: dict[str, None] = {}
        for w in self.wants():
            seen.update(dict.fromkeys(w.refs))
        return list(seen)

    def outcome(self) -> dict[str, Any]:
        wants = self.wants()
        runs = self.runs()
        refs = self.refs()
        parts = Counter(str(self.rt.world.partition(r).status) for r in refs)
        return {
            "db": str(self.rt.log.path),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "wants": [w for w in wants if not is_derived(w)],
            "derived_wants": [w for w in wants if is_derived(w)],
            "runs": dict(sorted(Counter(str(r.status) for r in runs).items())),
            "retries": sum(1 for r in runs if r.attempt > 1),
            "partitions": dict(sorted(parts.items())),
        }


def root_ok(outcome: dict[str, Any]) -> bool:
    return all(w.status is WantStatus.SUCCESSFUL for w in outcome["wants"])


def print_outcome(out: Console, outcome: dict[str, Any]) -> None:
    wants: list[WantState] = outcome["wants"]
    derived: list[WantState] = outcome["derived_wants"]
    out.print(Text(f"Outcome ({outcome['elapsed_s']:.1f} s, log {outcome['db']})", style="bold"))
    if wants:
        out.print(wants_table(wants))
    if derived:
        by = Counter(str(w.status) for w in derived)
        line = Text(f"derived wants (created for missing upstream partitions): {len(derived)} — ")
        append_counts(line, by)
        out.print(line)
    runs = Text("job runs: ")
    if outcome["runs"]:
        append_counts(runs, outcome["runs"])
    else:
        runs.append("none (nothing needed building)")
    if outcome["retries"]:
        runs.append(f"; {outcome['retries']} retr{'y' if outcome['retries'] == 1 else 'ies'} after a failure")
    out.print(runs)
    parts = Text("partitions of these wants: ")
    if outcome["partitions"]:
        append_counts(parts, outcome["partitions"])
    else:
        parts.append("none")
    out.print(parts)


def print_recovery(out: Console, rt: Runtime) -> None:
    rec = rt.recovery
    out.print(Text(f"Recovered {rt.log.path}: replayed {rec.events_replayed} events", style="bold"))
    out.print(f"  lost runs (in flight when the runtime died, marked Lost): {len(rec.lost_runs)}"
              + (f" — {short(rec.lost_runs, 6)}" if rec.lost_runs else ""))
    out.print(f"  partitions re-queued (back to Missing, to be rebuilt): {len(rec.requeued_partitions)}"
              + (f" — {short(rec.requeued_partitions, 6)}" if rec.requeued_partitions else ""))
    out.print(f"  active wants to finish: {len(rec.active_wants)}"
              + (f" — {short(rec.active_wants, 6)}" if rec.active_wants else ""))
    for line in rec.fenced:  # job processes the previous runtime left running: stopped, or out of reach
        out.print(f"  fenced: {line}")


def recovery_dict(rt: Runtime) -> dict[str, Any]:
    rec = rt.recovery
    return {"events_replayed": rec.events_replayed, "lost_runs": list(rec.lost_runs),
            "requeued_partitions": list(rec.requeued_partitions), "active_wants": list(rec.active_wants),
            "fenced": list(rec.fenced)}


@dataclass(frozen=True)
class Snapshot:
    """What the live display shows, taken in the event loop (the display's refresh thread only reads it)."""

    live: int = 0
    total: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    active_wants: int = 0
    wants: int = 0

    @classmethod
    def of(cls, session: Session) -> Snapshot:
        """The session's figures (kept up to date by its hook: nothing here grows with the wants)."""
        return cls(live=session.live, total=session.total, runs=dict(session.run_counts),
                   active_wants=session.active, wants=session.want_count)


_BAR_WIDTH = (10, 40)
"""The progress bar's width: at least (else it is dropped), at most."""

_DROP_ORDER = ("wants", "dep-miss", "ok", "spinner", "elapsed", "running", "what", "bar", "failed")
"""What the live line gives up first when the terminal is narrow; the X/Y count is never dropped."""


def progress_line(width: int, snap: Snapshot, *, elapsed: float, spinner: RenderableType | None = None) -> Table:
    """The live display's one line, fitted to ``width`` columns: ``⠋ partitions Live ━━━━╸ 12/22 0:00:03 runs:
    2 running, 9 ok, 1 dep-miss, 0 failed · wants: 1 active / 3``, giving up parts in :data:`_DROP_ORDER` when
    they do not fit, never the count."""
    runs = snap.runs
    pieces: dict[str, Text] = {
        "what": Text("partitions Live", style="bold"),
        "count": Text(f"{snap.live}/{snap.total}", style="bold"),
        "elapsed": Text(str(datetime.timedelta(seconds=int(elapsed))), style="yellow"),
        "running": Text(f"{runs.get('Running', 0)} running"),
        "ok": Text(f"{runs.get('Succeeded', 0)} ok"),
        "dep-miss": Text(f"{runs.get('DepMiss', 0)} dep-miss"),
        "failed": Text(f"{runs.get('Failed', 0)} failed", style="bold red" if runs.get("Failed") else ""),
        "wants": Text(f"· wants: {snap.active_wants} active / {snap.wants}"),
    }
    keep = set(pieces) | {"bar"} | ({"spinner"} if spinner is not None else set())
    run_parts = ("running", "ok", "dep-miss", "failed")

    def needed() -> int:
        cells = [pieces[k].cell_len for k in pieces if k in keep and k not in run_parts]
        shown_runs = [pieces[k].cell_len for k in run_parts if k in keep]
        if shown_runs:  # "runs: " and the ", " between them
            cells.append(len("runs: ") + sum(shown_runs) + 2 * (len(shown_runs) - 1))
        cells += [1] * ("spinner" in keep) + [_BAR_WIDTH[0]] * ("bar" in keep)
        return sum(cells) + len(cells) - 1  # one space between cells

    for name in _DROP_ORDER:
        if needed() <= width:
            break
        keep.discard(name)
    grid = Table.grid(padding=(0, 1))
    row: list[RenderableType] = []
    if "spinner" in keep and spinner is not None:
        row.append(spinner)
    if "what" in keep:
        row.append(pieces["what"])
    if "bar" in keep:
        bar = min(_BAR_WIDTH[1], _BAR_WIDTH[0] + max(0, width - needed()))
        row.append(ProgressBar(total=max(snap.total, 1), completed=snap.live, width=bar))
    row += [pieces["count"]] + ([pieces["elapsed"]] if "elapsed" in keep else [])
    shown = [pieces[k] for k in run_parts if k in keep]
    if shown:
        row.append(Text("runs: ") + Text(", ").join(shown))
    if "wants" in keep:
        row.append(pieces["wants"])
    for _ in row:
        grid.add_column(no_wrap=True)
    grid.add_row(*row)
    return grid


async def show_progress(session: Session, wait: Callable[[], Awaitable[None]], err: Console) -> None:
    """Await ``wait()``, with a live progress display on ``err`` when it is a terminal (one line that fits its
    width, from 80 columns up without losing the count; see :func:`progress_line`)."""
    if not err.is_terminal:
        await wait()
        return
    snap = Snapshot.of(session)
    spinner = Spinner("dots")

    def render() -> RenderableType:
        now = time.monotonic()
        return progress_line(err.width, snap, elapsed=now - session.started, spinner=spinner.render(now))

    with Live(console=err, transient=False, refresh_per_second=10, get_renderable=render) as live:

        def update() -> None:
            nonlocal snap
            snap = Snapshot.of(session)

        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                while True:
                    update()
                    await anyio.sleep(0.1)

            tg.start_soon(tick)
            try:
                await wait()
            finally:
                tg.cancel_scope.cancel()
        update()
        live.refresh()
