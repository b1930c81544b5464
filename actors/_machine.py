"""The generic state machine: a closed set of statuses, a transition table as data, one pure fold.

Each entity (Want, Partition, JobRun) declares a :class:`Machine`: its statuses, its terminal ones, and a
table ``{event name: (allowed source statuses, target status)}``. ``None`` as a source means "the entity does
not exist yet" (its creation event). A target of ``None`` means "the status does not change" (an event that
records a fact, such as ``WantSlaMissed``). Guards that depend on more than the status (the lease holder, for
instance) live in the entity's own transition function, which calls :meth:`Machine.target` first.

The same table drives the live actors, replay, the invariant checks and the generated Mermaid diagrams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from eventlog import Event, WantbuildError

S = TypeVar("S", bound=StrEnum)


class IllegalTransition(WantbuildError, ValueError):
    """An event that the entity's state machine does not accept in its current state. Nothing is written."""

    def __init__(self, kind: str, entity_id: str, status: str | None, event: str, detail: str = "") -> None:
        self.kind = kind
        self.entity_id = entity_id
        self.status = status
        self.event = event
        where = "does not exist yet" if status is None else f"is {status}"
        extra = f": {detail}" if detail else ""
        super().__init__(f"{kind} {entity_id!r} {where}; {event} is not allowed there{extra}")


@dataclass(frozen=True)
class Machine(Generic[S]):
    """A closed set of statuses and the table of legal transitions between them."""

    kind: str
    statuses: type[S]
    initial: S
    terminal: frozenset[S]
    table: Mapping[str, tuple[frozenset[S | None], S | None]]
    _edges: dict[S, dict[S, str]] = field(init=False, repr=False, compare=False)
    _paths: dict[tuple[S, S], tuple[tuple[str, S], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        edges: dict[S, dict[S, str]] = {s: {} for s in self.statuses}
        for name, (sources, target) in self.table.items():
            for src in sources:
                if src is not None and target is not None and target != src:
                    edges[src].setdefault(target, name)
        object.__setattr__(self, "_edges", edges)
        object.__setattr__(self, "_paths", {})  # path()'s answers without ``through`` (a want moves per partition)

    def target(self, entity_id: str, status: S | None, event: Event) -> S | None:
        """The status after ``event``, or raise :class:`IllegalTransition`. ``None``: unchanged."""
        name = event.event_name
        entry = self.table.get(name)
        if entry is None or status not in entry[0]:
            raise IllegalTransition(self.kind, entity_id, status, name)
        return entry[1]

    def is_terminal(self, status: S) -> bool:
        return status in self.terminal

    def path(self, source: S, goal: S, through: Iterable[S] | None = None) -> list[tuple[str, S]]:
        """The shortest legal path of ``(event name, status)`` steps from ``source`` to ``goal``.

        Intermediate statuses are never terminal. Empty when ``source == goal``; raises ``ValueError`` when
        no path exists.
        """
        if source == goal:
            return []
        if through is None:
            known = self._paths.get((source, goal))
            if known is None:
                known = self._paths[(source, goal)] = tuple(self._path(source, goal, set(self.statuses)))
            return list(known)
        return self._path(source, goal, set(through))

    def _path(self, source: S, goal: S, allowed: set[S]) -> list[tuple[str, S]]:
        prev: dict[S, tuple[S, str]] = {}
        queue: deque[S] = deque([source])
        while queue:
            node = queue.popleft()
            for nxt, name in self._edges[node].items():
                if nxt in prev or nxt == source:
                    continue
                if nxt != goal and (nxt in self.terminal or nxt not in allowed):
                    continue
                prev[nxt] = (node, name)
                if nxt == goal:
                    steps: list[tuple[str, S]] = []
                    cur = goal
                    while cur != source:
                        back, ev = prev[cur]
                        steps.append((ev, cur))
                        cur = back
                    return steps[::-1]
                queue.append(nxt)
        raise ValueError(f"{self.kind}: no legal path from {source} to {goal}")

    def edges(self) -> list[tuple[S | None, S | None, str]]:
        """Every ``(source, target, event name)`` of the table, in table order (for diagrams)."""
        out: list[tuple[S | None, S | None, str]] = []
        order = list(self.statuses)
        for name, (sources, target) in self.table.items():
            for src in sorted(sources, key=lambda s: -1 if s is None else order.index(s)):
                out.append((src, target, name))
        return out

    def mermaid(self) -> str:
        """A Mermaid ``stateDiagram-v2`` generated from the table."""
        lines = ["stateDiagram-v2"]
        if not any(src is None for src, _, _ in self.edges()):
            lines.append(f"    [*] --> {self.initial}")
        for src, target, name in self.edges():
            a = "[*]" if src is None else str(src)
            b = a if target is None else str(target)
            lines.append(f"    {a} --> {b}: {name}")
        for s in self.statuses:
            if s in self.terminal:
                lines.append(f"    {s} --> [*]")
        return "\n".join(lines) + "\n"


def sources(*statuses: S | None) -> frozenset[S | None]:
    return frozenset(statuses)
