"""Timers on the injected clock that deliver a message to the supervisor when they fire.

One task per pending timer, in the runtime's task group, cancelled when the timer is cancelled or the runtime
closes. Timers are keyed by their message, so re-arming the same (what, key) replaces the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import anyio
import anyio.abc

from actors import ActorSystem, Clock


class Timers:
    def __init__(self, tg: anyio.abc.TaskGroup, system: ActorSystem, clock: Clock,
                 target: tuple[str, str] = ("supervisor", "supervisor")) -> None:
        self._tg = tg
        self._system = system
        self._clock = clock
        self._target = target
        self._scopes: dict[Hashable, anyio.CancelScope] = {}
        self._soon: set[anyio.CancelScope] = set()

    def call_at(self, when: float, msg: Hashable, *, now: float) -> None:
        """Deliver ``msg`` to the supervisor at clock time ``when`` (at once if it has passed)."""
        self.cancel(msg)
        scope = anyio.CancelScope()
        self._scopes[msg] = scope
        self._tg.start_soon(self._fire, scope, max(0.0, when - now), msg)

    async def _fire(self, scope: anyio.CancelScope, delay: float, msg: Hashable) -> None:
        with scope:
            if delay > 0:
                await self._clock.sleep(delay)
            if self._scopes.get(msg) is scope:
                del self._scopes[msg]
            await self._system.tell(*self._target, msg)

    def cancel(self, msg: Hashable) -> None:
        scope = self._scopes.pop(msg, None)
        if scope is not None:
            scope.cancel()

    def soon(self, kind: str, key: str, msg: Any) -> None:
        """Tell an actor from a separate task (for callers that must not wait on a full mailbox).

        Cancelled by :meth:`cancel_all` (shutdown, crash) like the timers."""
        scope = anyio.CancelScope()
        self._soon.add(scope)
        self._tg.start_soon(self._tell, scope, kind, key, msg)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after ``delay`` seconds of the clock (cancelled like the tells of :meth:`soon`)."""
        scope = anyio.CancelScope()
        self._soon.add(scope)
        self._tg.start_soon(self._later, scope, delay, callback)

    async def _later(self, scope: anyio.CancelScope, delay: float, callback: Callable[[], None]) -> None:
        try:
            with scope:
                await self._clock.sleep(delay)
                callback()
        finally:
            self._soon.discard(scope)

    async def _tell(self, scope: anyio.CancelScope, kind: str, key: str, msg: Any) -> None:
        try:
            with scope:
                await self._system.tell(kind, key, msg)
        finally:
            self._soon.discard(scope)

    def pending(self) -> int:
        return len(self._scopes)

    def cancel_all(self, *, tells: bool = False) -> None:
        """Cancel every timer; with ``tells``, the pending :meth:`soon` tells too (shutdown, crash)."""
        for scope in self._scopes.values():
            scope.cancel()
        self._scopes.clear()
        if tells:
            for scope in self._soon:
                scope.cancel()
            self._soon.clear()
