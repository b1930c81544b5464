"""The actor system's cells: one activation of one key, its mailbox; a kind's registry (see "Mailboxes" in
``_system.py``'s module docstring)."""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final

from ._actor import Actor, ActorFailure, AskTimeout
from ._wheel import _Wheel


# -- internals -------------------------------------------------------------------------------------------------
@types.coroutine
def _yield() -> Generator[None, None, None]:
    """One trip through the event loop (what ``asyncio.sleep(0)`` does, minus a coroutine frame)."""
    yield


_EMPTY: Final[Any] = object()  # "no message": the mailbox is empty (or the actor must end)
_IDLE: Final[Any] = object()  # the wake-up of an actor idle for ``passivate_after`` seconds

_CURRENT: contextvars.ContextVar[_Cell | None] = contextvars.ContextVar("wantbuild_actor", default=None)
"""The cell whose actor task is running. Tasks a handler spawns inherit it: confirm with ``current_task``."""


class _MailboxClosed(Exception):
    """A waiting sender's mailbox closed (passivated, stopped, shut down): the item was not delivered."""


class _Ask:
    """The envelope of an ask. Tells travel bare: a tell allocates nothing."""

    __slots__ = ("cell", "future", "msg")

    def __init__(self, msg: Any, future: asyncio.Future[Any], cell: _Cell) -> None:
        self.msg = msg
        self.future = future
        self.cell = cell


@dataclass(frozen=True, slots=True)
class _Stopped:
    reason: str
    failure: ActorFailure | None


class _Kind:
    """Everything the system knows about one kind: settings, the registry of active actors, counters."""

    __slots__ = ("activations", "actors", "crash_log", "crash_log_swept", "crashes", "escalate_to", "exiting",
                 "factory", "idle_wheel", "linger", "mailbox_size", "name", "passivate_after", "passivations",
                 "restarts", "stopped")

    def __init__(self, name: str, factory: Callable[[str], Actor[Any]], passivate_after: float | None,
                 mailbox_size: float, escalate_to: tuple[str, str] | None, linger: bool = True) -> None:
        self.name = name
        self.factory = factory
        self.passivate_after = passivate_after
        self.linger = linger
        self.mailbox_size = mailbox_size
        self.escalate_to = escalate_to
        self.actors: dict[str, _Cell] = {}  # active actors only: this is what lets memory follow the active set
        self.exiting: dict[str, _Cell] = {}  # deregistered but still finishing (on_stop, draining)
        self.stopped: dict[str, _Stopped] = {}
        self.crash_log: dict[str, deque[float]] = {}  # recent crash times of passivated keys
        self.crash_log_swept = 0
        self.idle_wheel: _Wheel | None = None
        self.activations = 0
        self.passivations = 0
        self.restarts = 0
        self.crashes = 0


class _Cell:
    """One activation of one key: its task and its mailbox (see "Mailboxes" in the module docstring).

    Invariant: a cell found in its kind's registry is open. Everything that closes a mailbox (passivation,
    ``stop_actor``, the crash limit, shutdown) removes it from the registry in the same synchronous step.
    """

    __slots__ = ("buf", "closed", "crashes", "drained", "finished", "getter", "has_stop", "key", "kind",
                 "maxsize", "putters", "task")

    def __init__(self, kind: _Kind, key: str) -> None:
        self.kind = kind
        self.key = key
        self.buf: deque[Any] = deque()
        self.maxsize = kind.mailbox_size
        self.getter: asyncio.Future[Any] | None = None  # the actor waiting for a message
        self.putters: dict[asyncio.Future[None], Any] | None = None  # senders waiting for room, FIFO
        self.closed = False
        self.drained = False  # nothing left to answer: the mailbox was emptied or failed
        self.task: asyncio.Task[None] | None = None
        self.crashes: deque[float] | None = None
        self.finished: asyncio.Future[None] | None = None  # created only when a successor waits for it
        self.has_stop = False  # the running instance overrides on_stop

    # -- the mailbox ---------------------------------------------------------------------------------------------
    def offer(self, item: Any) -> bool:
        """Append ``item`` unless the mailbox is full; wake the actor if it waits."""
        buf = self.buf
        if len(buf) >= self.maxsize:
            return False
        if self.closed:  # never true for a registered cell (see the class docstring); a guard against loss
            raise _MailboxClosed
        buf.append(item)
        getter = self.getter
        if getter is not None:
            self.getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    async def put(self, item: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for room, then append (FIFO among waiting senders). Raises ``_MailboxClosed`` if not delivered."""
        if self.closed:
            raise _MailboxClosed
        if self.offer(item):
            return
        fut = loop.create_future()
        putters = self.putters
        if putters is None:
            putters = self.putters = {}
        putters[fut] = item
        try:
            await fut  # resolved once our item is in the mailbox (refill) or the mailbox closed (_MailboxClosed)
        except BaseException:
            putters.pop(fut, None)  # still waiting: withdraw the item (if it moved in already, it stays sent)
            raise

    def refill(self) -> None:
        """A message left a full mailbox: move the first waiting sender's item in (no barging)."""
        putters = self.putters
        assert putters
        fut = next(iter(putters))
        self.buf.append(putters.pop(fut))
        fut.set_result(None)

    def close(self) -> None:
        """No more messages: wake the actor (it drains what is queued, then ends); hand waiting items back."""
        self.closed = True
        getter = self.getter
        if getter is not None:
            self.getter = None
            if not getter.done():
                getter.set_result(None)
        if self.putters:
            putters, self.putters = self.putters, None
            for fut in putters:
                fut.set_exception(_MailboxClosed())

    def senders_waiting(self) -> int:
        return len(self.putters) if self.putters else 0


def _ask_expired(env: _Ask, timeout: float) -> None:
    if not env.future.done():
        cell = env.cell
        env.future.set_exception(AskTimeout(cell.kind.name, cell.key, type(env.msg).__name__, timeout))


def _idle_expired(cell: _Cell, delay: float) -> None:
    getter = cell.getter
    if getter is not None:
        cell.getter = None
        if not getter.done():
            getter.set_result(_IDLE)


