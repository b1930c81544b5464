"""Scenario runner: deterministic war-games of the runtime on a virtual clock.

A scenario file (TOML, see ``docs/scenarios.md``) describes simulated jobs, a timeline of wants, cancels,
taints, kills and crashes at virtual times, a collision policy, a seed, and expectations. The runner runs
the real runtime on a temporary event log, commits only at quiescent points so the same scenario and seed
give the same log, checks the invariants I1-I7 throughout, and reports (text, JSON, self-contained HTML).

- :func:`load_scenario` / :func:`parse_scenario` / :func:`dump_scenario`: the file format;
- :func:`run_scenario`: run one (on a fresh event loop); :class:`ScenarioResult` and :class:`Metrics`;
- :func:`render_text`, :func:`render_json`, :func:`render_html`: the reports;
- :func:`explore`: random timelines with hypothesis, failures shrunk and written out;
- :func:`catalog`: the bundled war-games; :data:`scenario`: the ``wantbuild scenario`` click group.

Errors::

    WantbuildError
     └── ScenarioError(ValueError)     a scenario file that cannot be used; names FILE:LINE and the key
"""

from ._catalog import CatalogEntry, catalog, catalog_dir, find_scenario, resolve
from ._cli import scenario
from ._clock import NeverQuiet, VirtualClock, run_until_idle
from ._dumper import dump_scenario
from ._explore import ExploreResult, explore, load_explore_target
from ._model import Bound, Expectations, GraphSpec, JobSpec, PartitionExpect, Scenario, Step, WantExpect
from ._parser import ScenarioError, load_scenario, parse_scenario
from ._report import render_html, render_json, render_text
from ._result import Check, CrashRow, EventRow, Metrics, RunSpan, ScenarioResult, ViolationRow, WantRow
from ._runner import run_scenario, run_scenario_async

__all__ = [
    "Bound",
    "CatalogEntry",
    "Check",
    "CrashRow",
    "EventRow",
    "Expectations",
    "ExploreResult",
    "GraphSpec",
    "JobSpec",
    "Metrics",
    "NeverQuiet",
    "PartitionExpect",
    "RunSpan",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "Step",
    "ViolationRow",
    "VirtualClock",
    "WantExpect",
    "WantRow",
    "catalog",
    "catalog_dir",
    "dump_scenario",
    "explore",
    "find_scenario",
    "load_explore_target",
    "load_scenario",
    "parse_scenario",
    "render_html",
    "render_json",
    "render_text",
    "resolve",
    "run_scenario",
    "run_scenario_async",
    "run_until_idle",
    "scenario",
]
