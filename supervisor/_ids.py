"""Sortable, deterministic ids for wants and job runs: ``w-00000001``, ``r-00000001``.

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
    def __init__(self, want_ids: Iterable[str] = (), run_ids: Iterable[str] = ()) -> None:
        self._want = _max_suffix(want_ids, "w-")
        self._run = _max_suffix(run_ids, "r-")

    def next_want(self) -> str:
        self._want += 1
        return f"w-{self._want:08d}"

    def next_run(self) -> str:
        self._run += 1
        return f"r-{self._run:08d}"
