"""The log writer's packed tips: committed entity tips held without an object per entity (issue 15).

The writer keeps the tips of the entities it moves now as ``_Entity`` objects (``_core.py``: a pending and a
committed tip each, about 250-320 bytes an entity with its tuple key and ints). The tips it sheds from there go here
instead of away, one int per entity in a dict per kind: ``entity_key | last_seq << 40 | last_entity_seq << 80``,
about 70-80 bytes an entity (a dict slot and a 36-byte int; the id string is usually shared with the World). An
entity that moves again after a while (a daily partition that waited for its upstream) then costs a dict pop, not a
database lookup.

Only committed tips of entities that are in the database come here. A tip whose ``entity_key`` or ``last_seq`` does
not fit in 40 bits (a trillion) is not kept: it is read from the database when needed, as any tip not cached.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Final

_BITS: Final = 40
LIMIT: Final = 1 << _BITS
"""``entity_key`` and ``last_seq`` must be below this to be packed."""
_MASK: Final = LIMIT - 1
_ESEQ: Final = 2 * _BITS

Tip = tuple[int, int, int]
"""entity_key, last seq, last entity_seq"""


class PackedTips:
    """Committed tips ``(kind, id) -> (entity_key, last_seq, last_entity_seq)``, one int per entity.

    Insertion order is kept per kind: :meth:`shed` drops the older entries first."""

    __slots__ = ("_by_kind", "_n")

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, int]] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def put(self, kind: str, entity_id: str, key: int, seq: int, eseq: int) -> bool:
        """Keep this entity's committed tip (replacing one kept before); False if it does not fit (not kept)."""
        if not (0 < key < LIMIT and 0 < seq < LIMIT and eseq > 0):
            self.discard(kind, (entity_id,))
            return False
        d = self._by_kind.get(kind)
        if d is None:
            d = self._by_kind[kind] = {}
        n = len(d)
        d[entity_id] = eseq << _ESEQ | seq << _BITS | key
        self._n += len(d) - n
        return True

    def get(self, kind: str, entity_id: str) -> Tip | None:
        d = self._by_kind.get(kind)
        v = None if d is None else d.get(entity_id)
        return None if v is None else (v & _MASK, v >> _BITS & _MASK, v >> _ESEQ)

    def take(self, kind: str, entity_id: str) -> Tip | None:
        """The tip, removed from here (the writer holds it as an object while the entity moves)."""
        d = self._by_kind.get(kind)
        v = None if d is None else d.pop(entity_id, None)
        if v is None:
            return None
        self._n -= 1
        return v & _MASK, v >> _BITS & _MASK, v >> _ESEQ

    def discard(self, kind: str, entity_ids: Iterable[str]) -> int:
        """Forget these entities' tips; return how many were kept."""
        d = self._by_kind.get(kind)
        if d is None:
            return 0
        n = len(d)
        pop = d.pop
        for eid in entity_ids:
            pop(eid, None)
        gone = n - len(d)
        self._n -= gone
        if not d:
            del self._by_kind[kind]
        return gone

    def shed(self, keep: int) -> None:
        """Drop the older entries until at most ``keep`` are left (the older half of each kind at a time, rounded
        up). Each kind is rebuilt: a dict does not give back its table when entries are deleted."""
        while self._n > keep:
            if keep <= 0:
                self.clear()
                return
            for kind, d in list(self._by_kind.items()):
                kept = dict(itertools.islice(d.items(), len(d) - len(d) // 2, None))
                if kept:
                    self._by_kind[kind] = kept
                else:
                    del self._by_kind[kind]
            self._n = sum(len(d) for d in self._by_kind.values())

    def clear(self) -> None:
        self._by_kind = {}
        self._n = 0

    def items(self) -> Iterable[tuple[str, str, Tip]]:
        """Every tip kept, oldest first per kind (for tests and checks)."""
        for kind, d in self._by_kind.items():
            for eid, v in d.items():
                yield kind, eid, (v & _MASK, v >> _BITS & _MASK, v >> _ESEQ)
