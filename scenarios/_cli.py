"""``wantbuild scenario``: list, run, compare and explore scenarios (a click group the main CLI mounts).

Exit codes: 0 everything held; 1 a scenario failed its expectations or an invariant; 2 bad usage or a bad
scenario file (one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, TextIO

import click
import structlog
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors import POLICIES, CollisionPolicy

from ._catalog import catalog, resolve
from ._model import Scenario
from ._parser import ScenarioError
from ._report import render_html, render_json, render_text
from ._result import ScenarioResult
from ._runner import run_scenario

__all__ = ["scenario"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROGRESS_EVERY = 10
"""``explore`` prints a progress line every this many timelines when stderr is not a terminal."""


def _console(file: TextIO) -> Console:
    # Piped output (not a terminal, no COLUMNS): wide enough that tables are not squeezed to 80 columns.
    wide = not file.isatty() and "COLUMNS" not in os.environ
    return Console(file=file, highlight=False, markup=False, soft_wrap=True, width=160 if wide else None)


def _out() -> Console:
    return _console(sys.stdout)


def _err() -> Console:
    return _console(sys.stderr)


def _usage(message: str) -> NoReturn:
    _err().print(Text(f"Error: {message}", style="bold red"))
    raise click.exceptions.Exit(EXIT_USAGE)


@contextmanager
def _scenario_errors() -> Iterator[None]:
    try:
        yield
    except ScenarioError as e:
        _usage(str(e))


def _load(target: str) -> Scenario:
    with _scenario_errors():
        return resolve(target)


def _s(v: float | None) -> str:
    return "-" if v is None else (f"{v:g} s")


class _StderrLogger:
    """structlog output to whatever ``sys.stderr`` is at the call (the CLI's stdout is for results)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = msg


@click.group("scenario")
@click.pass_context
def scenario(ctx: click.Context) -> None:
    """War-game the runtime: deterministic scenarios of colliding wants, crashes and failures."""
    if not structlog.is_configured():
        # Run on its own (not mounted under `wantbuild`, which configures logging): keep log lines off stdout,
        # where the results go, and keep only warnings; undo it when the command ends.
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=lambda *args: _StderrLogger(),
            cache_logger_on_first_use=False,
        )
        ctx.call_on_close(structlog.reset_defaults)


@scenario.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def list_cmd(as_json: bool) -> None:
    """List the bundled scenarios."""
    with _scenario_errors():
        entries = catalog()
    if as_json:
        click.echo(json.dumps([{"name": e.name, "description": e.description, "policy": e.policy,
                                "steps": e.steps, "path": str(e.path)} for e in entries], indent=2))
        return
    table = Table(title=f"{len(entries)} bundled scenarios", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("policy")
    table.add_column("steps", justify="right")
    table.add_column("description")
    for e in entries:
        table.add_row(e.name, e.policy, str(e.steps), e.description)
    _out().print(table)


def _print_result(r: ScenarioResult, *, verbose: bool) -> None:
    con = _out()
    text = render_text(r, verbose=verbose)
    head, _, rest = text.partition("\n")
    con.print(Text(head, style="bold green" if r.ok else "bold red"))
    for line in rest.splitlines():
        style = "red" if line.lstrip().startswith("FAIL") or "VIOLATED" in line or "violation" in line else None
        con.print(Text(line, style=style or ""))


@scenario.command("run")
@click.argument("target", required=False, metavar="NAME|FILE")
@click.option("--all", "run_all", is_flag=True, help="Run every bundled scenario.")
@click.option("--json", "as_json", is_flag=True, help="Print the result(s) as JSON.")
@click.option("--events", is_flag=True, help="With --json: include every event.")
@click.option("--html", "html", type=click.Path(path_type=Path),
              help="Write the HTML report here (with --all: a folder, one NAME.html per scenario).")
@click.option("--policy", type=click.Choice(POLICIES), help="Override the scenario's collision policy.")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the timeline and the notes.")
def run_cmd(target: str | None, run_all: bool, as_json: bool, events: bool, html: Path | None,
            policy: CollisionPolicy | None, seed: int | None, verbose: bool) -> None:
    """Run a bundled scenario by NAME, a scenario FILE, or --all of them."""
    if run_all == (target is not None):
        _usage("give a scenario NAME or FILE, or --all (not both)")
    if run_all:
        with _scenario_errors():
            scenarios = [resolve(str(e.path)) for e in catalog()]
    else:
        assert target is not None
        scenarios = [_load(target)]
    results: list[ScenarioResult] = []
    started = time.perf_counter()
    for sc in scenarios:
        if seed is not None:
            sc = sc.with_seed(seed)
        r = run_scenario(sc, policy=policy)
        results.append(r)
        if html is not None:
            dest = (html / f"{sc.name}.html") if run_all else html
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(render_html(r), encoding="utf-8")
        if not as_json and not run_all:
            _print_result(r, verbose=verbose)
    wall = time.perf_counter() - started
    if as_json:
        click.echo(render_json(results if run_all else results[0], events=events, timing=True), nl=False)
    elif run_all:
        table = Table(title=f"{len(results)} scenarios in {wall:.1f} s", title_justify="left")
        for col in ("scenario", "result", "job runs", "dup. work", "wasted", "collisions", "crashes",
                    "p95 latency", "wall"):
            table.add_column(col, justify="left" if col in ("scenario", "result") else "right")
        for r in results:
            m = r.metrics
            verdict = Text("PASS", style="bold green") if r.ok else Text("FAIL", style="bold red")
            table.add_row(r.name, verdict, str(m.job_runs), str(m.duplicate_work), _s(m.wasted_run_time),
                          str(m.collisions), str(m.crashes), _s(m.latency_p95), f"{r.wall_seconds:.2f} s")
        _out().print(table)
        for r in results:
            for c in r.failed_checks:
                _out().print(Text(f"{r.name}: FAIL {c.name}: expected {c.expected}, got {c.actual}", style="red"))
            if r.stopped:
                _out().print(Text(f"{r.name}: {r.stopped}", style="red"))
    if html is not None and not as_json:
        _err().print(f"HTML report{'s' if run_all else ''} written to {html}")
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(EXIT_FAILED)


def _policies(value: str) -> list[CollisionPolicy]:
    out: list[CollisionPolicy] = []
    for p in (x.strip() for x in value.split(",")):
        if not p:
            continue
        if p not in POLICIES:
            _usage(f"--policies: unknown policy {p!r}; choose from {', '.join(POLICIES)}")
        out.append(p)
    if not out:
        _usage("--policies: give at least one policy")
    return out


def _pool_sizes(value: str | None, sc: Scenario) -> tuple[str | None, list[int | None]]:
    """``--pool warehouse=4,8``: the pool and the sizes to try (``[None]``: the scenario's own)."""
    if value is None:
        return None, [None]
    name, eq, sizes = value.partition("=")
    try:
        tried = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        tried = []
    if not eq or not name or not tried or min(tried) < 1:
        _usage(f"--pool {value!r}: write NAME=SIZE[,SIZE...], e.g. --pool warehouse=4,8")
    if name not in sc.pools:
        _usage(f"--pool: scenario {sc.name} has no pool {name!r} (its pools: {', '.join(sc.pools) or 'none'}); "
               f"add [pools] {name} = N and pool = \"{name}\" on its jobs")
    return name, list(tried)


@scenario.command("compare")
@click.argument("target", metavar="NAME|FILE")
@click.option("--policies", default=",".join(POLICIES), show_default=True,
              help="Comma-separated collision policies to compare.")
@click.option("--pool", "pool", metavar="NAME=SIZE[,SIZE...]",
              help="Also compare sizes of one of the scenario's pools, e.g. --pool warehouse=4,8.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(target: str, policies: str, pool: str | None, as_json: bool) -> None:
    """Run one scenario under several collision policies (and pool sizes) and compare them in one table."""
    import dataclasses

    chosen = _policies(policies)
    sc = _load(target)
    pool_name, sizes = _pool_sizes(pool, sc)
    runs: list[tuple[int | None, ScenarioResult]] = []
    for size in sizes:
        variant = sc if size is None else dataclasses.replace(sc, pools={**sc.pools, str(pool_name): size})
        runs.extend((size, run_scenario(variant, policy=p)) for p in chosen)
    results = [r for _, r in runs]
    if as_json:
        rows = compare_rows(results)
        if pool_name is not None:
            rows = [{**row, "pool": pool_name, "pool_size": size} for row, (size, _) in zip(rows, runs, strict=True)]
        click.echo(json.dumps(rows, indent=2))
    else:
        title = f"scenario {sc.name}: collision policies" + (f" and sizes of pool {pool_name}" if pool_name else "")
        table = Table(title=title, title_justify="left")
        cols = ["policy", *(["pool size"] if pool_name else []), "job runs", "duplicate work", "wasted run time",
                "latency p50", "latency p95", "collisions", "invariants", "expectations"]
        for col in cols:
            table.add_column(col, justify="left" if col == "policy" else "right")
        for size, r in runs:
            m = r.metrics
            inv = Text("hold", style="green") if r.invariants_ok else Text(
                f"{len(r.violations)} violated", style="bold red")
            exp = Text("met", style="green") if r.ok else Text(f"{len(r.failed_checks)} unmet", style="yellow")
            table.add_row(r.policy, *([str(size)] if pool_name else []), str(m.job_runs), str(m.duplicate_work),
                          _s(m.wasted_run_time), _s(m.latency_p50), _s(m.latency_p95), str(m.collisions), inv, exp)
        _out().print(table)
    if not all(r.invariants_ok for r in results):
        raise click.exceptions.Exit(EXIT_FAILED)


def _when(value: str | None, what: str) -> float | None:
    """``--from``/``--to``: seconds since the epoch, or an ISO date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    import datetime as dt

    try:
        return float(value)
    except ValueError:
        pass
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        _usage(f"{what} {value!r} is neither seconds since the epoch nor an ISO time such as 2026-11-24T00:00")
    return (at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)).timestamp()


@scenario.command("from-log")
@click.argument("log_path", metavar="LOG", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "start", help="Only wants created from this time (epoch seconds or ISO time).")
@click.option("--to", "end", help="Only wants created up to this time.")
@click.option("--graph", "graph_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The graph file the log was written with: jobs keep their settings (else they are inferred).")
@click.option("--name", help="The scenario's name (default: the log's name + '-replayed').")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the scenario here (default: stdout).")
def from_log_cmd(log_path: Path, start: str | None, end: str | None, graph_path: Path | None, name: str | None,
                 out_path: Path | None) -> None:
    """Write a scenario that replays LOG's wants, job durations and outcomes on the simulated clock.

    Re-running it reproduces the log's outcome (its expectations say so); edit its timeline or pools and run
    `scenario compare` on it to ask what-ifs on real traffic.
    """
    import anyio

    from supervisor import load_graph

    from ._from_log import dump_replay, scenario_from_log

    graph = load_graph(graph_path) if graph_path is not None else None
    try:
        sc = anyio.run(lambda: scenario_from_log(log_path, graph=graph, start=_when(start, "--from"),
                                                 end=_when(end, "--to"), name=name))
    except ValueError as e:
        _usage(str(e))
    text = dump_replay(sc, str(log_path))
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.write_text(text)
        _err().print(f"wrote {out_path}: {len(sc.timeline)} step(s), {len(sc.jobs)} job(s); run it with "
                     f"`wantbuild scenario run {out_path}`")


def compare_rows(results: Sequence[ScenarioResult]) -> list[dict[str, object]]:
    """One row per result: the numbers ``compare`` shows."""
    return [{
        "policy": r.policy, "job_runs": r.metrics.job_runs, "duplicate_work": r.metrics.duplicate_work,
        "wasted_run_time": r.metrics.wasted_run_time, "latency_p50": r.metrics.latency_p50,
        "latency_p95": r.metrics.latency_p95, "collisions": r.metrics.collisions,
        "invariants_ok": r.invariants_ok, "violations": [str(v) for v in r.violations],
        "expectations_met": r.ok,
    } for r in results]


@scenario.command("explore")
@click.argument("target", metavar="FILE_OR_GRAPH")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1),
              help="How many random timelines to try.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random timelines.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to write a failing case to.")
@click.option("--max-steps", default=8, show_default=True, type=click.IntRange(min=1, max=50),
              help="Longest timeline to generate.")
@click.option("--expectations/--invariants-only", "use_expectations", default=None,
              help="Also check the file's scenario-wide [expect] bounds (default: only for a file without a "
                   "timeline, i.e. one written for exploring).")
@click.option("--faults", is_flag=True,
              help="Also inject random faults (failed commits, crashing handlers, ask timeouts, lost "
                   "notifications...): every want must still end and the invariants hold.")
def explore_cmd(target: str, runs: int, seed: int, out_dir: Path, max_steps: int,
                use_expectations: bool | None, faults: bool) -> None:
    """Generate random timelines over a scenario's (or graph file's) jobs; shrink and save any failure."""
    from ._catalog import find_scenario
    from ._explore import explore, load_explore_target

    with _scenario_errors():
        path = Path(target)
        if not path.exists() and not target.endswith(".toml"):
            path = find_scenario(target)
        base = load_explore_target(path)
        con = _err()

        def said(n: int) -> str:
            return f"exploring {base.name}: " + (f"{n}/{runs} timelines run" if n <= runs else
                                                 f"{n} timelines run (shrinking a failing one)")

        if con.is_terminal:
            with con.status(f"exploring {base.name}: 0/{runs} timelines") as status:
                res = explore(base, runs=runs, seed=seed, out_dir=out_dir, max_steps=max_steps,
                              use_expectations=use_expectations, faults=faults,
                              progress=lambda n, r: status.update(said(n)))
        else:  # a CI log or a pipe: no spinner, a line now and then so that the run is visibly alive
            res = explore(base, runs=runs, seed=seed, out_dir=out_dir, max_steps=max_steps,
                          use_expectations=use_expectations, faults=faults,
                          progress=lambda n, r: con.print(said(n)) if n % PROGRESS_EVERY == 0 else None)
    out = _out()
    if res.ok:
        out.print(Text(f"{base.name}: {res.examples} random timelines, every invariant and expectation held "
                       f"(seed {seed})", style="bold green"))
        return
    assert res.failure is not None
    assert res.minimal is not None
    out.print(Text(f"{base.name}: a timeline fails (found and shrunk in {res.examples} runs, seed {seed})",
                   style="bold red"))
    from ._explore import _why

    out.print(f"  why: {_why(res.failure)}")
    out.print(f"  minimal timeline ({len(res.minimal.timeline)} step(s)):")
    for s in res.minimal.ordered_timeline():
        out.print(f"    {s.describe()}")
    if res.written is not None:
        again = "reproduces it" if res.reproduced else "did NOT reproduce it when run again"
        out.print(f"  written to {res.written} ({again}); run it with: wantbuild scenario run {res.written}")
    raise click.exceptions.Exit(EXIT_FAILED)
