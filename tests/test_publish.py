"""Fenced publishing (issue #10): a run whose lease was taken over can never replace a newer build's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import wantbuild
from wantbuild import StaleFence, publish

ROOT = Path(__file__).resolve().parents[1]


def token(run: str, gen: int, ref: str = "daily/1") -> str:
    return json.dumps({"run": run, "generations": {ref: gen}})


def test_a_newer_generation_wins_whatever_the_order(tmp_path: Path) -> None:
    """Generation 3 publishing after generation 4 is refused (its staged file removed); before it, it is
    overwritten: either way the target holds generation 4's output."""
    target = tmp_path / "daily-1.csv"
    for order in (("r-3", 3, "r-4", 4), ("r-4", 4, "r-3", 3)):
        target.unlink(missing_ok=True)
        (tmp_path / ".daily-1.csv.wantbuild").unlink(missing_ok=True)
        results = []
        for run, gen in (order[:2], order[2:]):
            staged = tmp_path / f"{run}.tmp"
            staged.write_text(f"built by {run}")
            try:
                results.append(publish(staged, target, fence=token(str(run), int(gen))))
            except StaleFence as e:
                results.append(-e.theirs)
                assert not staged.exists()
        assert target.read_text() == "built by r-4"
        assert results == ([3, 4] if order[1] == 3 else [4, -4])


def test_a_directory_output_is_swapped_atomically(tmp_path: Path) -> None:
    """A directory output is published as a symlink to its generation's directory; the previous one goes."""
    target = tmp_path / "part"
    for gen in (1, 2):
        staged = tmp_path / f"staged-{gen}"
        staged.mkdir()
        (staged / "data").write_text(str(gen))
        publish(staged, target, fence=token(f"r-{gen}", gen))
    assert target.is_symlink()
    assert (target / "data").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["part", "part.g2"]


def test_the_ref_must_be_one_the_run_holds(tmp_path: Path) -> None:
    """A run of several partitions names the one it publishes; one it does not hold is an error that says so."""
    staged = tmp_path / "x"
    staged.write_text("x")
    fence = {"run": "r-1", "generations": {"a/1": 1, "a/2": 1}}
    with pytest.raises(wantbuild.WantbuildError, match="say which one"):
        publish(staged, tmp_path / "t", fence=fence)
    with pytest.raises(wantbuild.WantbuildError, match="does not hold 'a/3'"):
        publish(staged, tmp_path / "t", fence=fence, ref="a/3")
    assert publish(staged, tmp_path / "t", fence=fence, ref="a/2") == 1


def test_the_cli_publishes_with_the_token_of_the_environment(tmp_path: Path) -> None:
    """`wantbuild publish` reads WANTBUILD_FENCE: exit 0 publishes, exit 3 refuses a stale generation."""
    target = tmp_path / "out.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    codes = []
    for run, gen in (("r-2", 2), ("r-1", 1)):
        staged = tmp_path / f"{run}.tmp"
        staged.write_text(run)
        done = subprocess.run([sys.executable, "-m", "wantbuild", "publish", str(staged), str(target)],
                              env={**env, "WANTBUILD_FENCE": token(run, gen)}, capture_output=True, text=True,
                              timeout=60, check=False)
        codes.append(done.returncode)
    assert codes == [0, 3]
    assert target.read_text() == "r-2"
