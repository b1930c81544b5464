"""A wait index: waiters, each waiting for a set of refs to arrive (become Live), and the reverse map.

The supervisor keeps two: DepMiss runs waiting on their missing refs, and refs waiting on their static
dependencies or rebuild inputs. Both maps are kept exact: ``w in by_ref[r]`` if and only if ``r in
missing[w]``, and no set in either is ever empty. Wake-ups are returned sorted, so what the caller does with
them (tell actors, plan refs) happens in a deterministic order.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["WaitIndex"]


class WaitIndex:
    """Waiters and the refs each still waits for. ``missing`` and ``by_ref`` are read-only to callers (hot paths
    test ``ref in idx.missing`` / ``idx.by_ref`` directly); change them only through the methods."""

    __slots__ = ("by_ref", "missing")

    def __init__(self) -> None:
        self.missing: dict[str, set[str]] = {}  # waiter -> the refs it still waits for (never empty)
        self.by_ref: dict[str, set[str]] = {}  # ref -> the waiters waiting for it (never empty)

    def __contains__(self, waiter: object) -> bool:
        return waiter in self.missing

    def __len__(self) -> int:
        return len(self.missing)

    def wait(self, waiter: str, refs: Iterable[str]) -> None:
        """``waiter`` waits for ``refs`` (not empty; ``waiter`` must not be waiting already)."""
        left = set(refs)
        self.missing[waiter] = left
        by_ref = self.by_ref
        for r in left:
            waiting = by_ref.get(r)
            if waiting is None:
                by_ref[r] = {waiter}
            else:
                waiting.add(waiter)

    def arrived(self, ref: str) -> list[str]:
        """``ref`` is Live: the waiters that now have everything (sorted), no longer waiting."""
        waiting = self.by_ref.pop(ref, None)
        if not waiting:
            return []
        missing = self.missing
        done = []
        for w in waiting:
            left = missing[w]
            left.discard(ref)
            if not left:
                del missing[w]
                done.append(w)
        done.sort()
        return done

    def failed(self, ref: str) -> list[str]:
        """``ref`` cannot arrive: the waiters that waited for it (sorted), no longer waiting for anything."""
        waiting = self.by_ref.pop(ref, None)
        if not waiting:
            return []
        for w in waiting:
            self._unlist(w, self.missing.pop(w), ref)
        return sorted(waiting)

    def forget(self, waiter: str) -> None:
        """``waiter`` waits for nothing any more (a no-op if it was not waiting)."""
        left = self.missing.pop(waiter, None)
        if left:
            self._unlist(waiter, left, None)

    def _unlist(self, waiter: str, refs: set[str], skip: str | None) -> None:
        by_ref = self.by_ref
        for r in refs:
            if r == skip:
                continue
            waiting = by_ref.get(r)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del by_ref[r]
