"""The crash drill, small enough for every CI run: ``bench/chaos.py`` with few rounds and short jobs.

A served runtime (``wantbuild run GRAPH --db LOG --serve``, a real subprocess) builds a graph of command jobs with
discovered dependencies and a flaky job, while client threads create, cancel and taint through the CLI, and the
runtime is SIGKILLed at random moments, also during its restart. Each check of the drill (see ``bench/chaos.py``)
is one test here: it fails with the violations it found, each naming what was violated and the evidence.

The seed is random (set ``WANTBUILD_DRILL_SEED`` to replay one); it is in every failure message. Timing is not
deterministic, so a seed replays the same choices, not necessarily the same interleaving.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from chaos import CHECKS, DrillConfig, Tally, run_drill  # bench/ is not a package: on sys.path above

SEED = int(os.environ.get("WANTBUILD_DRILL_SEED") or random.randrange(1 << 30))
FAST = DrillConfig(rounds=2, seed=SEED, client_seconds=4.0, kills=(2, 3), restart_kill_p=0.35, job_max_s=0.5,
                   slow_p=0.25, slow_s=2.0, pool=9, clients=2, pause=(0.02, 0.25), cli_timeout=2.5,
                   serve_timeout=30.0, settle_timeout=40.0, stop_timeout=20.0)
"""Two rounds of about 15 s: short jobs with a few slow ones (so kills find jobs in flight), 2-3 kills a round."""

pytestmark = pytest.mark.drill


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Tally:
    """The drill's rounds, run once for all the checks below."""
    return run_drill(FAST, tmp_path_factory.mktemp("drill"))


def test_the_drill_killed_and_drove_a_runtime(drill: Tally) -> None:
    """The drill did what it is for: runtimes killed, wants acknowledged through the CLI, jobs run."""
    fig = drill.figures()
    assert fig["kills"] >= FAST.rounds, f"seed {SEED}: {fig}"
    assert fig["acks"] > 0, f"seed {SEED}: no command was acknowledged by the CLI: {fig}"
    assert fig["wants"] > 0, f"seed {SEED}: {fig}"
    assert fig["runs"] > 0, f"seed {SEED}: {fig}"


@pytest.mark.parametrize("check", CHECKS)
def test_no_violation_after_random_sigkills(drill: Tally, check: str) -> None:
    """After SIGKILLs of a served runtime at random moments, the drill finds no violation of this check."""
    found = drill.by_check()[check]
    shown = "\n".join(f"  - {v}" for v in found[:8])
    more = f"\n  ... and {len(found) - 8} more" if len(found) > 8 else ""
    assert not found, f"seed {SEED}: {len(found)} violation(s) of {check!r}:\n{shown}{more}"
