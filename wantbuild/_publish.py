"""Publishing a job's output under its fencing token: a run that lost its lease cannot overwrite a newer build.

Every build of a partition has a generation (its lease counter, ``PartitionState.generation``); a run gets the
generations of the partitions it holds as its fencing token (``JobContext.fence_token``, ``WANTBUILD_FENCE`` for
commands). :func:`publish` moves a staged output into place only if no newer generation has been published
there, under a lock, and records the generation beside it. So even a run that was declared Lost while its
process lived on (a network partition, another machine, a process that escaped its group) can at most publish
*before* the run that replaced it, never after: the newest generation always wins.

- a file: ``os.replace`` (atomic on one filesystem);
- a directory: the target becomes a symbolic link to ``<target>.g<generation>``, swapped atomically; the
  previous generation's directory is removed.

The record is ``.<name>.wantbuild`` next to the target (JSON: ref, generation, run). The lock is ``fcntl.flock``
on it, which holds on local filesystems and on NFS with lock support.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from eventlog import WantbuildError

__all__ = ["StaleFence", "fence_from_env", "publish"]


class StaleFence(WantbuildError, RuntimeError):
    """A newer generation of the partition was already published: this run's output must not replace it."""

    def __init__(self, target: Path, ref: str, mine: int, theirs: int, by: str) -> None:
        self.target, self.ref, self.mine, self.theirs, self.by = target, ref, mine, theirs, by
        super().__init__(f"not publishing {ref} generation {mine} to {target}: generation {theirs} (run {by}) is "
                         f"already there; this run's lease was taken over, and its output is discarded")


def fence_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fencing token a command job was started with (``WANTBUILD_FENCE``), decoded."""
    env = os.environ if environ is None else environ
    raw = env.get("WANTBUILD_FENCE")
    if not raw:
        raise WantbuildError("WANTBUILD_FENCE is not set: publish() needs the fencing token of the run (it is set "
                             "for every command job; an async job passes ctx.fence_token)")
    token: dict[str, Any] = json.loads(raw)
    return token


def _generation(token: Mapping[str, Any], ref: str | None) -> tuple[str, int, str]:
    gens: Mapping[str, int] = token.get("generations", {})
    if ref is None:
        if len(gens) != 1:
            raise WantbuildError(f"the run holds {len(gens)} partitions ({', '.join(sorted(gens)[:5])}): say which "
                                 f"one this output is (ref=...)")
        ref = next(iter(gens))
    if ref not in gens:
        raise WantbuildError(f"the run does not hold {ref!r}: it holds {', '.join(sorted(gens)[:5]) or 'nothing'}")
    return ref, int(gens[ref]), str(token.get("run", ""))


@contextlib.contextmanager
def _locked(record: Path) -> Iterator[int]:
    fd = os.open(record, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def publish(staged: str | os.PathLike[str], target: str | os.PathLike[str], *,
            fence: str | Mapping[str, Any] | None = None, ref: str | None = None) -> int:
    """Move ``staged`` (a file or directory, on ``target``'s filesystem) to ``target`` under the fencing token.

    ``fence`` is the run's token (``ctx.fence_token``; default ``WANTBUILD_FENCE``), ``ref`` the partition the
    output is (needed when the run holds several). Returns the generation published; raises
    :class:`StaleFence` (and removes ``staged``) when a newer generation is already there.
    """
    token = fence_from_env() if fence is None else (json.loads(fence) if isinstance(fence, str) else fence)
    ref, generation, run = _generation(token, ref)
    src, dst = Path(staged), Path(target)
    record = dst.parent / f".{dst.name}.wantbuild"
    with _locked(record) as fd:
        raw = os.pread(fd, 1 << 16, 0)
        current = json.loads(raw) if raw.strip() else {}
        theirs = int(current.get("generation", 0))
        if theirs > generation:
            _remove(src)
            raise StaleFence(dst, ref, generation, theirs, str(current.get("run", "?")))
        if src.is_dir() and not src.is_symlink():
            versioned = dst.parent / f"{dst.name}.g{generation}"
            _remove(versioned)
            os.rename(src, versioned)
            if dst.is_dir() and not dst.is_symlink():  # published before without the helper: keep it aside
                os.rename(dst, dst.parent / f"{dst.name}.g{theirs}-unfenced")
            link = dst.parent / f".{dst.name}.link-{os.getpid()}"
            _remove(link)
            os.symlink(versioned.name, link)
            old = os.readlink(dst) if dst.is_symlink() else None
            os.replace(link, dst)
            if old is not None and old != versioned.name:
                _remove(dst.parent / old)
        else:
            os.replace(src, dst)
        body = json.dumps({"ref": ref, "generation": generation, "run": run}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, body, 0)
        os.fsync(fd)
    return generation


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
