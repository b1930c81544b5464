"""``wantbuild publish``: a command job's atomic, fenced publish of its output (see ``wantbuild/_publish.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from .._publish import StaleFence, publish

EXIT_STALE = 3
"""``publish`` refused: a newer generation of the partition is already published."""


@click.command("publish", short_help="Move a job's staged output into place, unless a newer build is there.")
@click.argument("staged", type=click.Path(exists=True, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--ref", default=None, help="The partition the output is (when the run builds several).")
def publish_command(staged: Path, target: Path, ref: str | None) -> int:
    """Move STAGED (a file or directory) to TARGET under the run's fencing token (WANTBUILD_FENCE).

    For command jobs: build into a temporary path named after WANTBUILD_JOB_RUN_ID, then `wantbuild publish`
    it. Exit 0: published. Exit 3: a newer generation is already at TARGET (this run's lease was taken over; its
    output is discarded and the job should exit non-zero). See docs/job-protocol.md.
    """
    try:
        generation = publish(staged, target, ref=ref)
    except StaleFence as e:
        click.echo(f"wantbuild publish: {e}", err=True)
        return EXIT_STALE
    click.echo(f"published {target} (generation {generation})", err=True)
    return 0
