"""The scenario file: a TOML war-game for the runtime, parsed into a frozen :class:`Scenario`.

The format is documented with examples in ``docs/scenarios.md``; in short::

    [scenario]
    name = "identical-wants-racing"   # default: the file's stem
    description = "..."
    seed = 7                          # seeds flaky jobs (and nothing else: everything else is deterministic)
    policy = "shrink"                 # the runtime's collision policy: shrink | defer | all_or_nothing
    horizon = 86400                   # stop at this virtual time (seconds) even if something is still going

    [job.daily]                       # a simulated job: the real Graph fields plus how it behaves
    outputs = "daily/{date}"
    batch = 2
    duration = 60                     # virtual seconds per run (+ per_partition * batch size)
    behaviour = "succeed"             # succeed | fail | missing_deps | hang | flaky

    [[timeline]]                      # actions at virtual times, in file order for equal times
    at = 0
    action = "want"                   # want | cancel | taint | crash | kill | fault | stall
    name = "a"
    refs = ["daily/1"]

    [expect]                          # what must hold at the end
    job_runs = { max = 2 }
    [expect.wants]
    a = "Successful"

Several graphs (one log and runtime each, on one virtual clock) are ``[graphs.NAME]`` tables instead of
``[job.NAME]`` ones: ``upstream = ["events"]`` and ``[graphs.NAME.job.JOB]``; every step then names its
``graph``, and ``[expect.partitions]`` keys are ``GRAPH:REF``.

The format lives in three modules, layered so that neither reader nor writer imports the other: ``_model``
(:class:`Scenario` and the dataclasses it holds, and the format's vocabulary), ``_parser``
(:func:`parse_scenario`, :func:`load_scenario` and :class:`ScenarioError`, whose message starts with
``FILE:LINE:`` and names the key) and ``_dumper`` (:func:`dump_scenario`, which writes a :class:`Scenario` back
as TOML). This module re-exports their public names, so ``from ._format import Scenario`` works.
"""

from __future__ import annotations

from ._dumper import dump_scenario
from ._model import (
    ACTIONS,
    BEHAVIOURS,
    METRICS,
    Attempt,
    Bound,
    Expectations,
    GraphSpec,
    JobSpec,
    PartitionExpect,
    Scenario,
    Step,
    WantExpect,
)
from ._parser import ScenarioError, load_scenario, parse_scenario

__all__ = [
    "ACTIONS",
    "BEHAVIOURS",
    "METRICS",
    "Attempt",
    "Bound",
    "Expectations",
    "GraphSpec",
    "JobSpec",
    "PartitionExpect",
    "Scenario",
    "ScenarioError",
    "Step",
    "WantExpect",
    "dump_scenario",
    "load_scenario",
    "parse_scenario",
]
