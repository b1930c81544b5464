"""Faults injected into a running runtime on purpose: the drills that prove recovery (tests, scenarios).

A :class:`Faults` holds rules; the runtime's components ask it at fixed points whether to fail there. With no
``Faults`` given (the normal case) nothing is checked. A rule matches a point, optionally an actor/entity kind
(or a job name for ``job``) and a message or event type name; it lets ``skip`` matches pass, then fires
``times`` times. The points, and what firing does:

- ``commit``: an entity's append fails with ``CommitError`` before it is written (a batch that did not commit);
- ``handler``: an actor's handler raises :class:`InjectedFault` before it runs (a bug in a handler);
- ``ask_timeout``: an ask gets ``AskTimeout`` at once, although its message was delivered (a slow actor);
- ``hook``: a user hook raises after a commit (contained: logged, never fatal);
- ``notify``: the runtime's own post-commit notification raises (the committing actor crashes after its commit);
- ``job``: the task executing a job run raises before the job starts (wantbuild's failure, not the job's).

Everything is deterministic: rules fire on the n-th match, so a scenario with faults gives the same log for the
same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias, get_args

from eventlog import WantbuildError

FaultPoint: TypeAlias = Literal["commit", "handler", "ask_timeout", "hook", "notify", "job"]
FAULT_POINTS: Final[tuple[FaultPoint, ...]] = get_args(FaultPoint)


class InjectedFault(WantbuildError, RuntimeError):
    """An error raised on purpose by a :class:`Faults` rule."""


@dataclass
class FaultRule:
    """Fail at ``point`` when ``kind`` and ``match`` fit (None: anything), after ``skip`` matches, ``times`` times."""

    point: FaultPoint
    kind: str | None = None
    match: str | None = None
    skip: int = 0
    times: float = 1
    seen: int = field(default=0, compare=False)
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.point not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {self.point!r}; one of {', '.join(FAULT_POINTS)}")
        if self.skip < 0 or not (self.times >= 1 or self.times == math.inf):
            raise ValueError(f"fault rule {self.describe()}: skip must be >= 0 and times >= 1")

    def describe(self) -> str:
        what = " ".join(x for x in (self.kind, self.match) if x) or "anything"
        return f"{self.point} on {what}"


class Faults:
    """The rules of one drill, and what fired (``fired``: ``(point, kind, key, name)`` in order)."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self.rules: list[FaultRule] = list(rules or ())
        self.fired: list[tuple[str, str, str, str]] = []

    def add(self, point: FaultPoint, kind: str | None = None, match: str | None = None, *, skip: int = 0,
            times: float = 1) -> FaultRule:
        rule = FaultRule(point, kind, match, skip, times)
        self.rules.append(rule)
        return rule

    def hit(self, point: FaultPoint, kind: str, key: str, name: str) -> FaultRule | None:
        """The rule that fires here now, if one does (it is counted as fired)."""
        for rule in self.rules:
            if rule.point != point or rule.fired >= rule.times:
                continue
            if (rule.kind is not None and rule.kind != kind) or (rule.match is not None and rule.match != name):
                continue
            rule.seen += 1
            if rule.seen <= rule.skip:
                continue
            rule.fired += 1
            self.fired.append((point, kind, key, name))
            return rule
        return None

    def check(self, point: FaultPoint, kind: str, key: str, name: str) -> None:
        """Raise :class:`InjectedFault` if a rule fires here."""
        rule = self.hit(point, kind, key, name)
        if rule is not None:
            raise InjectedFault(f"injected fault: {rule.describe()} ({kind} {key}, {name})")
