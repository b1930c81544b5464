"""The actor base's public values: its errors, :class:`Actor`, :class:`ActorRef`, :class:`ActorContext`, the
stats, and the supervision helpers the actor kernel shares (:func:`note_crash`, :class:`FatalSink`).

The generic actor system itself is in ``_system.py`` (its module docstring gives the semantics), its mailbox and
registry cells in ``_mailbox.py``, its timeout wheel in ``_wheel.py``.
"""

from __future__ import annotations

import asyncio
import enum
import types
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

import anyio
import anyio.abc

from eventlog import LeaseLost, WantbuildError, get_logger

if TYPE_CHECKING:
    from ._system import ActorSystem

__all__ = [
    "DEFAULT",
    "Actor",
    "ActorContext",
    "ActorFailure",
    "ActorRef",
    "ActorStopped",
    "ActorSystemClosed",
    "ActorSystemStats",
    "AskDeadlock",
    "AskTimeout",
    "KindStats",
    "UnknownActorKind",
]

log = get_logger("wantbuild.actors")

M = TypeVar("M")

# -- errors ----------------------------------------------------------------------------------------------------
class AskTimeout(WantbuildError, TimeoutError):
    """No reply to an ask within its timeout. The message may still be handled; its reply is then dropped."""

    def __init__(self, kind: str, key: str, message_type: str, timeout: float) -> None:
        self.kind = kind
        self.key = key
        self.message_type = message_type
        self.timeout = timeout
        super().__init__(f"ask {message_type} to actor {kind} {key!r} timed out after {timeout:g} s")


class ActorStopped(WantbuildError, RuntimeError):
    """The actor is stopped (crash limit reached, or ``stop_actor``); ``revive`` re-enables it."""

    def __init__(self, kind: str, key: str, reason: str, failure: ActorFailure | None = None) -> None:
        self.kind = kind
        self.key = key
        self.reason = reason
        self.failure = failure
        super().__init__(f"actor {kind} {key!r} is stopped ({reason}); "
                         f"system.revive({kind!r}, {key!r}) re-enables it")


class ActorSystemClosed(WantbuildError, RuntimeError):
    """The actor system is not running: not entered yet, closing, or closed."""


class AskDeadlock(WantbuildError, RuntimeError):
    """An actor asked itself (or told itself with a full mailbox): it would wait for itself forever."""


class UnknownActorKind(WantbuildError, LookupError):
    """No factory is registered for this actor kind."""


# -- public values ---------------------------------------------------------------------------------------------
class _Default(enum.Enum):
    DEFAULT = enum.auto()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default.DEFAULT
"""Marker for "use the system-wide setting" in :meth:`ActorSystem.register` and :meth:`ActorSystem.ask`."""


@dataclass(frozen=True, slots=True)
class ActorFailure:
    """An actor that crashed more than ``max_restarts`` times within ``restart_window`` and was stopped."""

    kind: str
    key: str
    error: BaseException
    restarts: int


@dataclass(frozen=True, slots=True)
class KindStats:
    """Counters of one actor kind (see :meth:`ActorSystem.stats`)."""

    active: int
    activations: int
    passivations: int
    restarts: int
    crashes: int
    stopped: int
    mailbox_depth: int
    """Messages waiting in the mailboxes of this kind's active actors."""
    max_mailbox_depth: int
    """Messages waiting in the fullest mailbox."""
    senders_waiting: int
    """Tasks waiting for room in a full mailbox."""


@dataclass(frozen=True, slots=True)
class ActorSystemStats:
    """A snapshot of the actor system, per kind, with totals as properties."""

    kinds: Mapping[str, KindStats]

    @property
    def active(self) -> int:
        return sum(s.active for s in self.kinds.values())

    @property
    def activations(self) -> int:
        return sum(s.activations for s in self.kinds.values())

    @property
    def passivations(self) -> int:
        return sum(s.passivations for s in self.kinds.values())

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.kinds.values())

    @property
    def stopped(self) -> int:
        return sum(s.stopped for s in self.kinds.values())

    @property
    def mailbox_depth(self) -> int:
        return sum(s.mailbox_depth for s in self.kinds.values())


class ActorContext:
    """What the system tells an actor instance about itself: ``system``, ``kind``, ``key``, ``ref``."""

    __slots__ = ("key", "kind", "system")

    def __init__(self, system: ActorSystem, kind: str, key: str) -> None:
        self.system = system
        self.kind = kind
        self.key = key

    @property
    def ref(self) -> ActorRef:
        return ActorRef(self.system, self.kind, self.key)

    def __repr__(self) -> str:
        return f"ActorContext({self.kind!r}, {self.key!r})"


@dataclass(frozen=True, slots=True)
class ActorRef:
    """A cheap handle on ``(kind, key)``. It stays valid across passivation: the actor is found at send time."""

    system: ActorSystem = field(repr=False)
    kind: str
    key: str

    async def tell(self, msg: Any) -> None:
        await self.system.tell(self.kind, self.key, msg)

    def try_tell(self, msg: Any) -> bool:
        return self.system.try_tell(self.kind, self.key, msg)

    async def ask(self, msg: Any, *, timeout: float | _Default | None = DEFAULT) -> Any:
        return await self.system.ask(self.kind, self.key, msg, timeout=timeout)


# -- the actor base --------------------------------------------------------------------------------------------
class Actor(Generic[M]):
    """Subclass and implement :meth:`handle`; the system makes one instance per active key.

    The instance is thrown away on passivation and after a crash, so state that must survive lives elsewhere
    (for entities: the event log) and is reloaded in :meth:`on_start`.
    """

    kind: ClassVar[str]
    reply_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions that :meth:`handle` raises as answers (an illegal request, say): the asker gets them, and the
    actor is neither logged as crashed nor restarted. Any other exception is a crash."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._context: ActorContext | None = None

    @property
    def context(self) -> ActorContext:
        """Set by the system before :meth:`on_start`."""
        if self._context is None:
            raise RuntimeError(f"{type(self).__name__} {self.key!r} is not running in an actor system")
        return self._context

    @property
    def system(self) -> ActorSystem:
        return self.context.system

    async def on_start(self) -> None:
        """Called on activation and after every restart, before the first message: load state here."""

    async def handle(self, msg: M) -> Any:
        """Handle one message; the return value is the reply of an ask (ignored for a tell)."""
        raise NotImplementedError(f"{type(self).__name__}.handle")

    async def on_restart(self, failed: Any, error: Exception) -> None:
        """Called on the fresh instance after a crash, once ``on_start`` has run, before the next message.

        ``failed`` is the message whose handling crashed (``None`` when ``on_start`` or ``on_restart`` itself
        did); it is not handled again. Re-derive what must happen next from the persisted state instead: a
        crash may have come before or after any of the handler's effects.
        """

    async def on_stop(self) -> None:
        """Called on passivation, ``stop_actor`` and system shutdown (not after a crash)."""


def note_crash(history: deque[float] | None, now: float, window: float, max_restarts: int, kind: str, key: str,
               msg: Any, exc: Exception, on_crash: Callable[[str, str, Any, Exception], None] | None,
               ) -> deque[float]:
    """Record a crash of ``(kind, key)`` at ``now`` in its history (the crash times within ``window``), log it
    and tell ``on_crash``. The actor restarts if the history then holds at most ``max_restarts`` crashes.
    Shared by the generic :class:`ActorSystem` and the runtime's kernel (``actors/_kernel.py``)."""
    if history is None:
        history = deque()
    history.append(now)
    while history[0] < now - window:
        history.popleft()
    restart = len(history) <= max_restarts
    if isinstance(exc, LeaseLost):
        # Not a fault of this actor: the runtime lost the log's writer lease and is stopping (it says why, once);
        # an error with a traceback per actor and restart only buried that message.
        log.info("actor stopped by a lost writer lease", actor_kind=kind, actor_key=key,
                 action="restart" if restart else "stop", crashes_in_window=len(history))
    else:
        log.error("actor crashed", actor_kind=kind, actor_key=key,
                  message_type=None if msg is None else type(msg).__name__,
                  action="restart" if restart else "stop", crashes_in_window=len(history), exc_info=exc)
    if on_crash is not None:
        try:
            on_crash(kind, key, msg, exc)
        except Exception as e:
            log.error("on_crash failed", actor_kind=kind, actor_key=key, exc_info=e)
    return history


def stopped_error(kind: str, key: str, reason: str, failure: ActorFailure | None) -> ActorStopped:
    """What an ask to a stopped actor raises (the crash that stopped it as its direct cause)."""
    err = ActorStopped(kind, key, reason, failure)
    if failure is not None:
        err.__cause__ = failure.error  # shown as "the direct cause" in tracebacks
    return err


class FatalSink:
    """Owns one anyio task group in which the errors no actor handles are raised: the owner's ``async with``
    then fails with them, as with a failed task (the generic :class:`ActorSystem` and the runtime's kernel)."""

    _tg: anyio.abc.TaskGroup | None = None
    _fatal_count = 0
    _after_shutdown: ClassVar[str] = "actor system failure after shutdown"

    async def _open_task_group(self) -> None:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg

    async def _close_task_group(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                                tb: types.TracebackType | None, *, cancel: bool = False) -> None:
        tg = self._tg
        if tg is None:
            return
        self._tg = None
        if cancel:
            tg.cancel_scope.cancel()
        if self._fatal_count:
            # an actor failure failed the owner: the task group raises it (with the block's own error)
            await tg.__aexit__(exc_type, exc, tb)
        else:
            # nothing failed in here: the block's own exception or cancellation propagates unwrapped
            await tg.__aexit__(None, None, None)

    def _fatal(self, exc: BaseException) -> None:
        """An error no actor handles: fail the owner's task group, as an escaped task error would."""
        tg = self._tg
        if tg is not None:
            try:
                tg.start_soon(_reraise, exc)
                self._fatal_count += 1
                return
            except RuntimeError:  # pragma: no cover - the task group is no longer active
                pass
        log.critical(self._after_shutdown, exc_info=exc)  # pragma: no cover


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _reraise(exc: BaseException) -> None:
    raise exc


