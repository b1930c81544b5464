"""A wait index: waiters, each waiting for a set of refs to arrive (become Live), and the reverse map.

The supervisor keeps two: DepMiss runs waiting on their missing refs, and refs waiting on their static
dependencies or rebuild inputs. Both maps are kept exact: ``w in idx.waiters(r)`` if and only if ``r in
missing[w]``, and no set in either is ever empty. Wake-ups are returned sorted, so what the caller does with
them (tell actors, plan refs) happens in a deterministic order.

A ref that one waiter waits for (nearly every ref: a backfill's raw partition is missing for one daily run) maps
to that waiter itself, not to a set of one: a set is ~200 bytes made when the wait starts and read and freed when
the ref arrives, each time a cold line at 100,000 refs in flight (issue 15); a second waiter makes it a set, and a
set left with one waiter goes back to the waiter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["WaitIndex"]


class WaitIndex:
    """Waiters and the refs each still waits for. ``missing`` and ``by_ref`` are read-only to callers (hot paths
    test ``ref in idx.missing`` / ``idx.by_ref`` directly); change them only through the methods, and read a ref's
    waiters with :meth:`waiters` (a ``by_ref`` value is one waiter's id, or a set of two or more)."""

    __slots__ = ("by_ref", "missing")

    def __init__(self) -> None:
        self.missing: dict[str, set[str]] = {}  # waiter -> the refs it still waits for (never empty)
        self.by_ref: dict[str, str | set[str]] = {}  # ref -> its one waiter, or a set of two or more

    def __contains__(self, waiter: object) -> bool:
        return waiter in self.missing

    def __len__(self) -> int:
        return len(self.missing)

    def waiters(self, ref: str) -> Collection[str]:
        """The waiters waiting for ``ref`` (empty if none; read only)."""
        waiting = self.by_ref.get(ref)
        if waiting is None:
            return ()
        return (waiting,) if isinstance(waiting, str) else waiting

    def wait(self, waiter: str, refs: Iterable[str]) -> None:
        """``waiter`` waits for ``refs`` (not empty; ``waiter`` must not be waiting already)."""
        left = set(refs)
        self.missing[waiter] = left
        by_ref = self.by_ref
        for r in left:
            waiting = by_ref.setdefault(r, waiter)
            if waiting is waiter:
                continue
            if isinstance(waiting, str):
                by_ref[r] = {waiting, waiter}
            else:
                waiting.add(waiter)

    def arrived(self, ref: str) -> list[str]:
        """``ref`` is Live: the waiters that now have everything (sorted), no longer waiting."""
        waiting = self.by_ref.pop(ref, None)
        if waiting is None:
            return []
        missing = self.missing
        if isinstance(waiting, str):
            left = missing[waiting]
            left.discard(ref)
            if left:
                return []
            del missing[waiting]
            return [waiting]
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
        if waiting is None:
            return []
        if isinstance(waiting, str):
            waiting = {waiting}
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
            if waiting is None:
                continue
            if isinstance(waiting, str):
                if waiting == waiter:
                    del by_ref[r]
                continue
            waiting.discard(waiter)
            if len(waiting) == 1:
                by_ref[r] = next(iter(waiting))
            elif not waiting:
                del by_ref[r]
