"""Sortable, deterministic ids for wants, job runs and taints: ``w-00000001``, ``r-00000001``, ``t-00000001``.

Counters continue from the largest id in the World, so a restarted runtime (or a scenario replayed with the
same seed) hands out exactly the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable


def _max_suffix(ids: Iterable[str], prefix: str) -> int:
    best = 0
    for i in ids:
        if i.startswith(prefix):
            tail = i[len(prefix):]
            if tail.isdigit():
                best = max(best, int(tail))
    return best


class IdSource:
    def __init__(self, want_ids: Iterable[str] = (), run_ids: Iterable[str] = (),
                 taint_ids: Iterable[str] = ()) -> None:
        self._want = _max_suffix(want_ids, "w-")
        self._run = _max_suffix(run_ids, "r-")
        self._taint = _max_suffix(taint_ids, "t-")

    def next_want(self) -> str:
        self._want += 1
        return f"w-{self._want:08d}"

    def next_run(self) -> str:
        self._run += 1
        return f"r-{self._run:08d}"

    def next_taint(self) -> str:
        self._taint += 1
        return f"t-{self._taint:08d}"
