"""A timeout wheel: deadlines of one duration, bucketed (the actor system's asks and idle timers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class _Wheel:
    """Deadlines of one duration, bucketed: one loop timer per bucket instead of one per deadline.

    A ``TimerHandle`` per ask cost ~40% of an ask (the loop's heap orders them with a pure-Python ``__lt__``);
    here a deadline costs a set insert and a discard. It fires up to ``delay / 32`` late (at least 1 ms), never
    early.
    """

    __slots__ = ("buckets", "delay", "fire", "grain", "loop", "timers")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, fire: Callable[[Any, float], None]) -> None:
        self.loop = loop
        self.delay = delay
        self.grain = max(delay / 32, 0.001)
        self.fire = fire
        self.buckets: dict[int, set[Any]] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, item: Any) -> set[Any]:
        """Call ``fire(item, delay)`` after ``delay``; discard ``item`` from the returned set to cancel."""
        tick = int((self.loop.time() + self.delay) / self.grain) + 1
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = set()
            self.timers[tick] = self.loop.call_at(tick * self.grain, self._expire, tick)
        bucket.add(item)
        return bucket

    def _expire(self, tick: int) -> None:
        del self.timers[tick]
        fire, delay = self.fire, self.delay
        for item in self.buckets.pop(tick):
            fire(item, delay)

    def close(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        self.buckets.clear()


