"""The actor kernel: every actor is a mailbox and a state, run by one dispatcher, persisted by group commit.

The runtime's actors (one per Want, Partition and JobRun, and the supervisor) are not tasks. An actor is a
**cell**: a mailbox, the actor's committed state (kept in the :class:`~actors.World`), and the progress of what
it is in the middle of. Its logic is a :class:`Behavior` whose handlers are plain functions: given the cell
(:class:`Ctx`) and a message they return the reply, after saying through the cell what else must happen::

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        if isinstance(msg, RequestLease) and ctx.state.status in LEASABLE:
            st = ctx.persist(PartitionBuilding(job_run_id=msg.job_run_id))  # checked now, adopted at commit
            return LeaseReply(True, ctx.key, st.status, msg.job_run_id, st.generation)  # sent after commit

One **dispatcher** (a loop callback, no task) runs the handlers of every actor that has a message, many actors
per loop iteration. What the handlers of one pass persist goes into the log together (one group commit); when
that commit lands, the kernel adopts each actor's new state, tells the runtime once for the whole batch
(``on_commit``), runs the user hooks, and only then releases what the handlers said: replies, tells, asks and
continuations. **Nothing anyone is told comes before its commit** (write-ahead). An actor whose persist is in
flight, or that waits for the replies of its asks, keeps its next messages in its mailbox (they are *stashed*)
until that is over, so an actor handles one thing at a time, in order, as a task-per-actor design would.

A flow of several steps (take 500 leases, then start the job; record the outcome, then settle the partitions,
then report) is written as steps chained by :meth:`Ctx.then` and :meth:`Ctx.ask_many`, its progress kept in
the cell (``ctx.scratch``), never persisted: after a crash :meth:`Behavior.restarted` re-derives it from the
committed state. An ask to many actors travels as one envelope (:class:`_Gather`); each of them handles its
part with its own state machine and persists its own event.

Supervision is the generic actor system's: a handler that raises loses its message (an asker gets the error),
the cell's transient progress is dropped, ``on_crash`` is called, and the actor restarts in place: a fresh
behaviour (for the kinds that have one per key) and :meth:`Behavior.restarted`, before the rest of its mailbox.
More than ``max_restarts`` crashes within ``restart_window`` seconds stop it: asks to it raise
:class:`~actors.ActorStopped`, tells are dropped with a warning, and ``on_escalate`` is called until
:meth:`Kernel.revive`. A batch that fails to commit fails every append in it: each actor concerned crashes (its
asker gets the :class:`~eventlog.CommitError`) and restarts.

Memory follows the active actors: a cell exists while it has messages, a commit in flight or asks out, and is
dropped as soon as it is idle (its state stays in the World). Only a kind registered with ``keep=True`` (the
supervisor) keeps its cell and behaviour instance. A message to an idle actor waits in the ready queue, the actor's
entry in its kind's table a claim (:class:`_Env`), and its cell is made when the dispatcher reaches it; with the
steps in flight bounded (``_FLIGHT``), a burst to 100,000 idle actors keeps a few passes' worth of cells alive.

Design notes (measured, see ``docs/performance.md`` and ``docs/decisions.md``, "The actor kernel"): a task per
activation cost ~10 us per message and a commit wait per persist; here a message costs a deque append and a
handler call, a persist an entry in the pass's list of appends, and a whole pass one hand-over to the log
(``Log.submit_many``) and one callback when its commits land.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import operator
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ClassVar, Final, final

import anyio
import anyio.abc
import msgspec

from eventlog import Append, CommitError, Event, Log, Record, WantbuildError, get_logger

from ._actor import (
    ActorFailure,
    ActorStopped,
    ActorSystemClosed,
    AskTimeout,
    FatalSink,
    UnknownActorKind,
    _retrieve,
    note_crash,
    stopped_error,
)
from ._clock import Clock, SystemClock
from ._evict import EntityEvicted, EvictingTable, settled
from ._faults import Faults
from ._world import APPLY, World

__all__ = ["Behavior", "Committed", "Ctx", "Hook", "Hooks", "Kernel", "KernelStats"]

log = get_logger("wantbuild.actors")

Hook = Callable[[Record, Any, Any], Any]
"""``hook(record, old_state, new_state)``: called after a committed transition (may return an awaitable)."""

_FREE: Final = 0
_COMMIT: Final = 1  # a persist is in flight
_GATHER: Final = 2  # asks are out; the cell waits for every reply
_HOOKS: Final = 3  # committed; the cell waits for its async user hooks
_LOAD: Final = 4  # its entity was evicted: the cell waits for its state to be folded back from the log

_BUDGET: Final = 4000
"""Handler steps one dispatcher pass runs before it lets the loop go round (the log's writer starts committing
what the pass persisted so far: the database works while the next pass computes)."""

_FLIGHT: Final = 4096
"""Steps whose commit is in flight past which the dispatcher waits for a commit to land before it starts another pass:
a pass (up to _BUDGET steps) may run while the one before it commits, not while two do (the writer commits up to
4,096 appends a batch; on PostgreSQL the next pass still overlaps the round trip of the one before). What it bounds
is the cells alive (a cell lives from its step until its commit lands): with the cells of idle actors made only when
their turn comes (_Env), a burst of messages to 100,000 idle actors keeps ~8,000 cells alive, warm in the caches,
instead of 100,000 made at once and read again cold at their turn and at their landing."""

_POOL: Final = 8192
"""Idle cells of an entity kind kept for reuse (per kind): a cell dropped clean (no crash history, nothing queued,
referenced by nothing but its kind's table of cells) is reset and handed to the kind's next activation, instead of
a new cell and mailbox made per message to an idle actor (seven per partition of a batched backfill). As many as
can be alive at once under _FLIGHT (about two passes): every cell is reused while still warm, and an idle pool
holds at most ~8 MB."""


_SMALL: Final = 4
"""An envelope of fewer requests (a run of one to three partitions) goes part by part through ``_send``, its cells
made at once, as before claims (_Env): a claim saves cold cells only in a burst, and for a request or two its list,
keys and expansion cost more than the cell they put off (case (a), one partition a run: 2.10 million instructions a
partition with a claim for every envelope, 2.03 million without; cachegrind)."""

_first: Final = operator.itemgetter(0)


class _Cont:
    """Marks a continuation in a mailbox: ``(_CONT, fn, arg)`` runs ``fn(ctx, arg)`` as the flow's next step."""


_CONT: Final[Any] = _Cont()
_UNSET: Final[Any] = object()


class Committed(msgspec.Struct, frozen=True, gc=False):
    """One committed transition, as the runtime is told of it: the record, the state before and after.

    A msgspec Struct: one is made per transition, and its constructor is C (~45 ns against ~125 for a class with
    ``__slots__`` and an ``__init__``). Untracked by the GC: it refers to a record and two states, never back."""

    record: Record
    old: Any
    new: Any


class Hooks:
    """User hooks, run after each committed transition, in commit order.

    A hook that raises is logged and never affects the state or the other hooks. A hook may return an
    awaitable (a coroutine function): the actor that committed then waits for it, in order, before anything
    else it does (its reply, its messages, its next step), as an actor awaiting its hooks would; other actors
    are not held.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self._user: list[Hook] = []
        self.faults = faults

    def __bool__(self) -> bool:
        return bool(self._user)

    def add(self, hook: Hook) -> Callable[[], None]:
        """Register a user hook; returns a function that removes it."""
        self._user.append(hook)

        def remove() -> None:
            if hook in self._user:
                self._user.remove(hook)

        return remove

    def run(self, rec: Record, old: Any, new: Any, waits: list[tuple[Hook, Record, Any]]) -> None:
        """Call every hook on one transition; the awaitables they return are appended to ``waits``."""
        faults = self.faults
        for hook in self._user:
            try:
                if faults is not None:
                    faults.check("hook", rec.entity_kind, rec.entity_id, rec.event.event_name)
                res = hook(rec, old, new)
                if res is not None and inspect.isawaitable(res):
                    waits.append((hook, rec, res))
            except Exception as e:
                _hook_failed(hook, rec, e)


async def _await_hooks(waits: list[tuple[Hook, Record, Any]]) -> None:
    for hook, rec, res in waits:
        try:
            await res
        except Exception as e:
            _hook_failed(hook, rec, e)


def _hook_failed(hook: Hook, rec: Record, e: Exception) -> None:
    # "event" is structlog's positional message: the event's name goes in as event_type.
    log.error("user hook failed", hook=getattr(hook, "__qualname__", repr(hook)), seq=rec.seq,
              entity_kind=rec.entity_kind, entity_id=rec.entity_id, event_type=rec.event.event_name, exc_info=e)


class Behavior:
    """The logic of one actor kind: subclass and implement :meth:`receive`.

    Entity kinds (``Kernel.register(..., entity=True)``) share one instance for all their keys: keep nothing
    per key on ``self`` (the state is ``ctx.state``, transient progress ``ctx.scratch``). A kind registered
    with ``keep=True`` gets one instance per key that lives as long as the kernel, replaced after a crash.
    """

    reply_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions a handler raises as answers: the asker gets them and the actor does not crash."""

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        """Handle one message. The return value is the reply to an ask (after the commit of what the handler
        persisted), unless the handler chained a next step (:meth:`Ctx.then`, :meth:`Ctx.ask_many`): the
        flow's last step then gives the reply."""
        raise NotImplementedError(f"{type(self).__name__}.receive")

    def restarted(self, ctx: Ctx, failed: Any, error: Exception) -> Any:
        """After a crash, before the next message: re-derive from ``ctx.state`` what the lost message (``failed``,
        ``None`` when a restart itself crashed) or the interrupted flow was doing. It is a step like any other."""
        return None


class _Kind:
    __slots__ = ("activations", "adopt", "apply", "cells", "crash_log", "crash_log_swept", "crashes", "entity",
                 "evicted", "factory", "free", "get", "keep", "name", "receive", "reply_errors", "restarts", "shared",
                 "stopped", "table")

    def __init__(self, name: str, factory: Callable[[str], Behavior], entity: bool, keep: bool,
                 table: dict[str, Any] | None, adopt: Callable[[Any, Any], None] | None = None) -> None:
        self.name = name
        self.factory = factory
        self.entity = entity
        self.keep = keep
        self.shared: Behavior | None = factory("") if entity else None
        self.reply_errors: tuple[type[Exception], ...] = (
            type(self.shared).reply_errors if self.shared is not None else ())
        self.cells: dict[str, Ctx | _Env] = {}  # an _Env: the actor's messages wait in the ready queue (a claim)
        self.free: list[Ctx] = []  # idle cells kept for reuse (_POOL): clean, mailbox empty, not in cells
        self.stopped: dict[str, tuple[str, ActorFailure | None]] = {}
        self.crash_log: dict[str, deque[float]] = {}
        self.crash_log_swept = 0
        self.apply = APPLY.get(name) if entity else None
        self.table = table
        self.evicted: EvictingTable | None = table if isinstance(table, EvictingTable) else None
        # The dispatcher's per-message calls, bound once: the shared behaviour's handler (None: one per key), and the
        # table's read straight from the dict (an entity with a cell is resident: a cell of an evicted one is held
        # until its state is folded back, and evict_settled skips entities with cells, so EvictingTable.get's look
        # in the evicted index, a Python call per message, is never needed there).
        self.receive: Callable[[Ctx, Any], Any] | None = self.shared.receive if self.shared is not None else None
        self.get: Callable[[str], Any] | None = dict.get.__get__(table) if table is not None else None
        self.adopt = adopt  # what the World also derives from an adopted state (World.on_adopt)
        self.activations = 0
        self.crashes = 0
        self.restarts = 0


class _Gather:
    """One ask to many actors (or one): the replies in request order, then the asker's next step."""

    __slots__ = ("cell", "epoch", "fn", "left", "replies")

    def __init__(self, cell: Ctx, fn: Callable[[Ctx, Any], Any], n: int) -> None:
        self.cell = cell
        self.epoch = cell.epoch
        self.fn = fn
        self.left = n
        self.replies: list[Any] = [None] * n


@final
class _Env:
    """Messages to actors that had no cell when they were sent, in the ready queue where their cells would have been.

    An envelope's requests (``gather``), or tells sent in a row to actors of one kind (no ``gather``). Each such actor's
    entry in its kind's table of cells is this object (a claim) until the dispatcher reaches it (``Kernel._expand``):
    then the cells are made (reused warm from the kind's pool while it lasts), each with its message and then what
    was sent to it meanwhile (``extra``, in order), and they go to the head of the queue, in request order. So the
    actors handle what they are sent in the order it was sent and at the place in the queue they would have with a
    cell made at once, and a burst to 100,000 idle actors makes no cell before each one's turn. ``skip``: positions
    of requests given at once to an actor that had a cell."""

    __slots__ = ("extra", "gather", "kind", "requests", "skip")

    def __init__(self, kind: _Kind, gather: _Gather | None, requests: list[tuple[str, Any]]) -> None:
        self.kind = kind
        self.gather = gather
        self.requests = requests
        self.skip: set[int] | None = None
        self.extra: dict[str, list[tuple[Any, Any, int]]] | None = None

    def later(self, key: str, entry: tuple[Any, Any, int]) -> None:
        """A message to ``key`` sent after this one's: it follows it into the cell."""
        if self.extra is None:
            self.extra = {key: [entry]}
        else:
            self.extra.setdefault(key, []).append(entry)

    def waiting(self, key: str) -> list[tuple[Any, Any, int]]:
        """The messages to ``key`` sent after this one's (for ``Kernel.aclose`` and ``stats``)."""
        return self.extra.get(key, []) if self.extra is not None else []


class Ctx:
    """One actor's cell, and what its handler sees of it: ``key``, ``state``, ``scratch`` and the effects.

    Every effect a step asks for (:meth:`persist`, :meth:`tell`, :meth:`ask_many`, :meth:`then`) happens only
    if the step returns normally; if it persisted anything, only after that commit.
    """

    # Slots, every one set when the cell is made: a handler and the dispatcher read a dozen of them per message, and a
    # slot is read without a dictionary lookup (class-level defaults cost a type lookup and a dict miss per read).
    # Cells are reused (_POOL), so what a cell costs to make matters less than what it costs to use.
    __slots__ = ("blocked", "crashes", "epoch", "fidx", "ftarget", "kernel", "key", "kind", "mbox", "new", "nxt", "obj",
                 "old", "outbox", "outcome", "queued", "ridx", "rtarget", "rvalue", "scratch", "state", "states")

    def __init__(self, kernel: Kernel, kind: _Kind, key: str) -> None:
        self.kernel = kernel
        self.kind = kind
        self.key = key
        shared = kind.shared
        self.obj: Behavior = shared if shared is not None else kind.factory(key)
        self.mbox: deque[tuple[Any, Any, Any]] = deque()
        self.crashes: deque[float] | None = kind.crash_log.pop(key, None) if kind.crash_log else None
        self.blocked = _FREE
        self.queued = False
        self.epoch = 0
        self.state: Any = None
        """The entity's state for the step running: committed, or as the step's persists so far leave it (``None`` if
        it has none). Read afresh before every step."""
        # What the step persisted: its appends are in the kernel's list for the pass from ``outcome`` on (-1: none);
        # the state before the first and after the last (``old``, ``new``); with more than one, ``states``: the state
        # before each of them.
        self.outcome = -1
        self.old: Any = None
        self.new: Any = None
        self.states: list[Any] | None = None
        self.outbox: list[tuple[str | None, Any, Any]] | None = None
        self.nxt: Any = None
        self.rvalue: Any = None
        self.rtarget: Any = None
        self.ridx = 0
        self.ftarget: Any = None  # the reply target of the flow in progress (carried across continuations)
        self.fidx = 0
        self.scratch: Any = None

    def __repr__(self) -> str:
        return f"<Ctx {self.kind.name} {self.key!r}>"

    # -- what a handler reads ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The actor's kind."""
        return self.kind.name

    # -- what a handler asks for ---------------------------------------------------------------------------
    def persist(self, event: Event, command: tuple[int, Mapping[str, Any]] | None = None) -> Any:
        """Check ``event`` against the state machine now (an illegal one raises ``IllegalTransition`` and
        nothing is written) and return the state it leads to; it is appended when the step ends and adopted
        when it commits.

        ``command=(id, result)``: the inbox command this transition is the effect of, completed with ``result``
        in the same transaction (exactly once: a crash leaves both or neither)."""
        k = self.kind
        apply = k.apply
        if apply is None:
            raise TypeError(f"actor kind {k.name!r} is not an entity kind: it has no events to persist")
        old = self.state
        seq = 0 if old is None else old.entity_seq
        kernel = self.kernel
        at = kernel.now()
        new = apply(old, event, self.key, at, seq + 1)
        faults = kernel.faults
        if faults is not None and faults.hit("commit", k.name, self.key, event.event_name):
            raise CommitError(f"injected fault: the batch holding {event.event_name} of {k.name} {self.key} "
                              f"did not commit")
        # Appended to the pass's list at once (a step that raises has its appends cut off again: _step_failed).
        appends = kernel._appends
        if self.outcome < 0:
            self.outcome = len(appends)
            self.old = old
        elif self.states is None:
            self.states = [self.old, old]
        else:
            self.states.append(old)
        appends.append((k.name, self.key, seq, event, at, command, old is None))
        self.state = self.new = new
        return new

    def tell(self, kind: str, key: str, msg: Any) -> None:
        """Send ``msg`` once this step is over (after its commit, if it persisted anything)."""
        if self.outbox is None:
            self.outbox = [(kind, key, msg)]
        else:
            self.outbox.append((kind, key, msg))

    def after_commit(self, fn: Callable[[Any], object], arg: Any) -> None:
        """Call ``fn(arg)`` once this step is over (after its commit), in order with its tells, without a step of its
        own: an effect outside the actors that must wait until the step's events are durable (a job's start). If it
        raises, the actor crashes (its tells after it are dropped, its next step does not run)."""
        if self.outbox is None:
            self.outbox = [(None, fn, arg)]
        else:
            self.outbox.append((None, fn, arg))

    def ask_many(self, kind: str, requests: Sequence[tuple[str, Any]], then: Callable[[Ctx, Any], Any]) -> None:
        """Ask each ``(key, message)`` once this step is over, then run ``then(ctx, replies)``: the replies in
        request order, an exception in the place of a request that failed (the actor stopped, it crashed on it,
        an injected ask timeout). The actor handles nothing else meanwhile."""
        if self.nxt is not None:
            raise RuntimeError(f"{self!r}: one next step per step (ask_many after then/ask_many)")
        self.nxt = (kind, requests, then)

    def then(self, fn: Callable[[Ctx, Any], Any], arg: Any = None) -> None:
        """Run ``fn(ctx, arg)`` as the flow's next step, before any other message (after this step's commit)."""
        if self.nxt is not None:
            raise RuntimeError(f"{self!r}: one next step per step (then after then/ask_many)")
        self.nxt = (fn, arg)


@dataclass(frozen=True, slots=True)
class KernelStats:
    """Counters of the kernel: cells alive, messages waiting, per kind activations, crashes, stops."""

    active: int
    mailbox_depth: int
    activations: dict[str, int]
    crashes: dict[str, int]
    stopped: dict[str, int]


_NEW, _OPEN, _CLOSED = range(3)


class Kernel(FatalSink):
    """Runs the actors of every registered kind: an async context manager (one anyio task group, for the
    async user hooks and for errors no actor handles).

    ``on_commit(batch)`` is told once per landed commit with every transition in it (:class:`Committed`, in
    commit order); ``on_crash(kind, key, message, error)`` for every crash; ``on_escalate(failure)`` when an
    actor is stopped after repeated crashes (with none, that is fatal).
    """

    _after_shutdown = "actor kernel failure after shutdown"

    def __init__(self, log_: Log | None, world: World, clock: Clock, *, hooks: Hooks | None = None,
                 faults: Faults | None = None, max_restarts: int = 3, restart_window: float = 60.0,
                 ask_timeout: float | None = 30.0,
                 on_commit: Callable[[list[Committed]], None] | None = None,
                 on_crash: Callable[[str, str, Any, Exception], None] | None = None,
                 on_escalate: Callable[[ActorFailure], None] | None = None) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, not {max_restarts!r}")
        if not restart_window > 0:
            raise ValueError(f"restart_window must be > 0, not {restart_window!r}")
        self.log = log_
        self.world = world
        self.clock = clock
        # The system clock's now() is time.time(): called directly, a Python frame less per persist.
        self.now: Callable[[], float] = time.time if type(clock) is SystemClock else clock.now
        self.hooks = hooks if hooks is not None else Hooks(faults)
        self.faults = faults
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.ask_timeout = ask_timeout
        self.on_commit = on_commit
        self.on_crash = on_crash
        self.on_escalate = on_escalate
        self._kinds: dict[str, _Kind] = {}
        self._ready: deque[Ctx | _Env] = deque()  # cells to run, and messages to actors with no cell yet (_Env)
        self._flight: list[Ctx] = []
        self._in_flight = 0  # cells whose commit has not landed
        self._running = False
        self._scheduled = False
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._externals: set[asyncio.Future[Any]] = set()
        self._loading: dict[str, list[Ctx]] = {}  # cells of evicted entities waiting for their state, by kind
        self._appends: list[Append] = []  # the pass's appends, submitted together when it ends (``_launch``)
        self._submit_many: Callable[[list[Append]], asyncio.Future[list[Record | BaseException]]] = (
            log_.submit_many if log_ is not None else _no_log)

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Kernel:
        if self._state != _NEW:
            raise RuntimeError("a Kernel can be entered only once")
        self._loop = asyncio.get_running_loop()
        await self._open_task_group()
        self._state = _OPEN
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: types.TracebackType | None) -> None:
        try:
            await self.aclose()
        finally:
            await self._close_task_group(exc_type, exc, tb, cancel=True)

    async def aclose(self) -> None:
        """Stop: nothing more is handled or released; asks waiting anywhere raise ``ActorSystemClosed``.
        A commit that lands later changes nothing (as after a crash, the log has it and the World does not)."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        err = ActorSystemClosed("the actor kernel is closed (the runtime is shutting down or crashed)")
        for k in self._kinds.values():
            for key, cell in k.cells.items():
                if type(cell) is _Env:  # messages waiting for the actor's turn
                    for _msg, target, _idx in cell.waiting(key):
                        if isinstance(target, asyncio.Future) and not target.done():
                            target.set_exception(err)
                    continue
                for _msg, target, _idx in cell.mbox:
                    if isinstance(target, asyncio.Future) and not target.done():
                        target.set_exception(err)
                cell.mbox.clear()
                for target in (cell.rtarget, cell.ftarget):
                    if isinstance(target, asyncio.Future) and not target.done():
                        target.set_exception(err)
            k.cells.clear()
        for fut in list(self._externals):
            if not fut.done():
                fut.set_exception(err)
        self._externals.clear()
        self._ready.clear()
        self._flight.clear()
        self._appends.clear()
        await anyio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        return self._state != _OPEN

    # -- registration ----------------------------------------------------------------------------------------
    def register(self, kind: str, factory: Callable[[str], Behavior], *, entity: bool = True,
                 keep: bool = False) -> None:
        """Register ``kind``. ``factory(key)`` makes its behaviour: called once for an entity kind (its instance
        is shared), per activation and after each crash otherwise. ``entity``: its state lives in the World and
        changes only through :meth:`Ctx.persist`. ``keep``: its cells are never dropped when idle."""
        if kind in self._kinds:
            raise ValueError(f"actor kind {kind!r} is already registered")
        table = self.world._tables.get(kind) if entity else None
        if entity and table is None:
            raise ValueError(f"{kind!r} is not an entity kind of this World (add one with register_entity_kind before "
                             f"the World is made)")
        self._kinds[kind] = _Kind(kind, factory, entity, keep, table,
                                  self.world.on_adopt.get(kind) if entity else None)

    def _kind(self, kind: str) -> _Kind:
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownActorKind(f"no actor kind {kind!r} is registered "
                                   f"(registered: {', '.join(sorted(self._kinds)) or 'none'})") from None

    # -- messaging from outside --------------------------------------------------------------------------------
    def tell(self, kind: str, key: str, msg: Any) -> None:
        """Put ``msg`` in the mailbox of ``(kind, key)`` (it is handled at the loop's next turn). A tell to a
        stopped actor is dropped with a warning; ``ActorSystemClosed`` once the kernel is closed."""
        if self._state != _OPEN:
            raise self._closed_error()
        self._send(self._kind(kind), key, msg, None, 0)
        self._kick()

    def try_tell(self, kind: str, key: str, msg: Any) -> bool:
        """:meth:`tell` for callers written for bounded mailboxes: the kernel's never refuse (always ``True``)."""
        self.tell(kind, key, msg)
        return True

    async def ask(self, kind: str, key: str, msg: Any, *, timeout: float | object | None = _UNSET) -> Any:
        """Send ``msg`` and return the reply, once what its handling persisted is committed; re-raise what the
        handler raised (or the commit's ``CommitError``). ``AskTimeout`` after ``timeout`` seconds (default: the
        kernel's ``ask_timeout``; the message is still handled), ``ActorStopped``, ``ActorSystemClosed``."""
        if self._state != _OPEN:
            raise self._closed_error()
        k = self._kind(kind)
        stopped = k.stopped.get(key)
        if stopped is not None:
            err = _stopped_error(k, key, stopped)
            raise err from err.__cause__
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[Any] = loop.create_future()
        faults = self.faults
        if faults is not None and faults.hit("ask_timeout", kind, key, type(msg).__name__):
            self._send(k, key, msg, None, 0)  # delivered, its reply never awaited: as a real timeout
            self._kick()
            raise AskTimeout(kind, key, type(msg).__name__, 0.0)
        self._send(k, key, msg, fut, 0)
        self._externals.add(fut)
        self._kick()
        t = self.ask_timeout if timeout is _UNSET else timeout
        try:
            if t is None:
                return await fut
            assert isinstance(t, int | float)
            try:
                async with asyncio.timeout(t):
                    return await asyncio.shield(fut)
            except TimeoutError:
                if fut.done():
                    return fut.result()
                fut.add_done_callback(_retrieve)
                raise AskTimeout(kind, key, type(msg).__name__, t) from None
        finally:
            self._externals.discard(fut)

    # -- control -----------------------------------------------------------------------------------------------
    def revive(self, kind: str, key: str) -> None:
        """Re-enable a stopped actor, forgetting its crash history; its next message activates it."""
        k = self._kind(kind)
        k.stopped.pop(key, None)
        k.crash_log.pop(key, None)

    def is_stopped(self, kind: str, key: str) -> bool:
        return key in self._kind(kind).stopped

    def stopped(self, kind: str) -> dict[str, str]:
        """The stopped keys of ``kind`` with why each was stopped (until :meth:`revive`)."""
        return {key: why for key, (why, _f) in self._kind(kind).stopped.items()}

    def is_active(self, kind: str, key: str) -> bool:
        return key in self._kind(kind).cells

    def active_count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(k.cells) for k in self._kinds.values())
        return len(self._kind(kind).cells)

    def busy(self) -> bool:
        """Whether anything is waiting: a message, a step, a commit, replies (the supervisor's idle cell aside)."""
        if self._ready or self._scheduled or self._running or self._in_flight or self._flight:
            return True
        return any(type(c) is _Env or c.mbox or c.blocked for k in self._kinds.values() for c in k.cells.values())

    def stats(self) -> KernelStats:
        cells = [(key, c) for k in self._kinds.values() for key, c in k.cells.items()]
        return KernelStats(len(cells),
                           sum(1 + len(c.waiting(key)) if type(c) is _Env else len(c.mbox) for key, c in cells),
                           {n: k.activations for n, k in self._kinds.items()},
                           {n: k.crashes for n, k in self._kinds.items()},
                           {n: len(k.stopped) for n, k in self._kinds.items()})

    # -- the dispatcher ----------------------------------------------------------------------------------------
    def _closed_error(self) -> ActorSystemClosed:
        return ActorSystemClosed("the actor kernel is not running " + (
            "(enter it first: `async with Kernel(...)`)" if self._state == _NEW else "(it is closing or closed)"))

    def _kick(self) -> None:
        if not self._scheduled and not self._running:
            self._scheduled = True
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._dispatch)

    def _send(self, k: _Kind, key: str, msg: Any, target: Any, idx: int) -> None:
        """Queue ``(msg, reply target)`` for ``(k, key)``, making a cell if there is none."""
        cell = k.cells.get(key)
        if cell is None:
            if k.stopped:
                stopped = k.stopped.get(key)
                if stopped is not None:
                    if target is None:
                        log.warning("tell to a stopped actor dropped", actor_kind=k.name, actor_key=key,
                                    message_type=type(msg).__name__, reason=stopped[0])
                    else:
                        self._resolve_error(target, idx, _stopped_error(k, key, stopped))
                    return
            evicted = k.evicted
            if target is None and k.shared is not None and (
                    evicted is None or not evicted.index or not evicted.maybe_evicted(key)):
                # A tell to an idle actor (of a kind with a shared behaviour: making its cell calls nothing that could
                # fail): it waits in the queue with the tells sent before it to idle actors of its kind (one _Env at
                # the queue's tail), its cell made when its turn comes (_expand).
                ready = self._ready
                env = ready[-1] if ready else None
                if type(env) is not _Env or env.gather is not None or env.kind is not k:
                    env = _Env(k, None, [])
                    ready.append(env)
                env.requests.append((key, msg))
                k.cells[key] = env
                return
            cell = k.cells[key] = self._cell(k, key)
            k.activations += 1
            cell.mbox.append((msg, target, idx))
            if evicted is not None and evicted.index and evicted.maybe_evicted(key):
                self._load(cell)
                return
            cell.queued = True
            self._ready.append(cell)
            return
        if type(cell) is _Env:  # its first message waits in the queue: this one follows it
            cell.later(key, (msg, target, idx))
            return
        cell.mbox.append((msg, target, idx))
        if not cell.queued and not cell.blocked:
            cell.queued = True
            self._ready.append(cell)

    def _dispatch(self) -> None:
        """One pass: run the ready cells' steps (up to the budget), then hand the pass's appends to the log.

        Each ready cell's messages run until its mailbox is empty or it blocks; an idle cell is then dropped. (One
        function, not a call per cell: the frame of a call was ~5% of a message's cost in the kernel.)"""
        self._scheduled = False
        if self._running or self._state != _OPEN or self._in_flight >= _FLIGHT:  # _landed dispatches again
            return
        self._running = True
        try:
            ready = self._ready
            budget = _BUDGET
            faults = self.faults
            flight = self._flight
            while ready and budget > 0:
                cell = ready.popleft()
                if type(cell) is _Env:  # messages to actors that had no cell: make their cells, at the queue's head
                    self._expand(cell)
                    continue
                cell.queued = False
                mbox = cell.mbox
                k = cell.kind
                get = k.get  # the table's dict.get (_Kind)
                receive = k.receive
                key = cell.key
                while mbox and not cell.blocked:
                    msg, target, idx = mbox.popleft()
                    budget -= 1
                    if get is not None:
                        cell.state = get(key)
                    if msg is _CONT:  # the flow's next step: (_CONT, fn, arg), replying to the flow's asker
                        fn, arg, target, idx = target, idx, cell.ftarget, cell.fidx
                        msg = None
                    else:
                        if faults is not None:
                            try:
                                faults.check("handler", k.name, key, type(msg).__name__)
                            except Exception as exc:
                                self._resolve_error(target, idx, exc)
                                self._crash(cell, msg, exc)
                                continue
                        fn, arg = receive if receive is not None else cell.obj.receive, msg
                    try:
                        value = fn(cell, arg)
                    except Exception as exc:
                        self._step_failed(cell, msg, exc, target, idx)
                        continue
                    if cell.outcome >= 0:  # it persisted (its appends are in the pass's list): wait for the commit
                        cell.rvalue = value
                        cell.rtarget = target
                        cell.ridx = idx
                        cell.blocked = _COMMIT
                        flight.append(cell)
                        break
                    if cell.outbox is not None or cell.nxt is not None:
                        self._after(cell, value, target, idx)
                    else:
                        if msg is None:
                            cell.ftarget = None
                        if target is not None:
                            self._resolve(target, idx, value)
                if not mbox and not cell.blocked and not k.keep:  # idle: memory follows the active actors
                    if cell.crashes is None and not cell.queued:
                        cells = k.cells
                        got = cells.pop(key, None)  # one lookup (it is not in the table once it was stopped)
                        if got is cell:
                            free = k.free
                            if len(free) < _POOL and k.shared is not None:
                                cell.scratch = cell.state = cell.old = cell.new = None  # nothing of the entity
                                free.append(cell)
                        elif got is not None:
                            cells[key] = got
                    else:
                        self._drop(cell)
        finally:
            self._running = False
            if self._flight:
                self._launch()
            if self._ready and self._state == _OPEN and self._in_flight < _FLIGHT:
                self._kick()

    def _cell(self, k: _Kind, key: str) -> Ctx:
        """A cell for ``key``: an idle one of the kind reused (_POOL), or a new one."""
        free = k.free
        if not free:
            return Ctx(self, k, key)
        cell = free.pop()
        cell.key = key
        if k.crash_log:
            cell.crashes = k.crash_log.pop(key, None)
        return cell

    def _expand(self, env: _Env) -> None:
        """The dispatcher has reached messages to actors that had no cell (_Env): make their cells (reused from the
        kind's pool while it lasts), each with its message and those sent to it since, and put them at the head of
        the ready queue in the order sent, where cells made at once would be by now."""
        k, gather, skip, extra = env.kind, env.gather, env.skip, env.extra
        cells, free, crash_log = k.cells, k.free, k.crash_log
        made: list[Ctx] = []
        for i, (key, msg) in enumerate(env.requests):
            if skip is not None and i in skip:
                continue
            if free:  # a reused idle cell (_POOL), as _cell does
                c = free.pop()
                c.key = key
                if crash_log:
                    c.crashes = crash_log.pop(key, None)
            else:
                c = Ctx(self, k, key)
            cells[key] = c
            c.mbox.append((msg, gather, i))  # (a tell's index is never read: it has no reply target)
            if extra is not None:
                more = extra.pop(key, None)
                if more is not None:
                    c.mbox.extend(more)
            c.queued = True
            made.append(c)
        k.activations += len(made)
        made.reverse()
        self._ready.extendleft(made)

    def _drop(self, cell: Ctx) -> None:
        """Forget an idle cell (its state is in the World), keeping its recent crash times: a poison message
        must not dodge the restart limit because the actor went idle in between. Bounded: stale entries are
        swept whenever the crash log has doubled since the last sweep."""
        k = cell.kind
        if k.cells.get(cell.key) is cell:
            del k.cells[cell.key]
        history = cell.crashes
        if history:
            horizon = time.monotonic() - self.restart_window
            if history[-1] >= horizon:
                log_ = k.crash_log
                log_[cell.key] = history
                if len(log_) > 2 * k.crash_log_swept + 64:
                    for stale in [key for key, h in log_.items() if h[-1] < horizon]:
                        del log_[stale]
                    k.crash_log_swept = len(log_)

    def _step_failed(self, cell: Ctx, msg: Any, exc: Exception, target: Any, idx: int) -> None:
        """A handler step raised: nothing it asked for happens; its asker gets the error; the actor crashes
        (unless ``exc`` is one of the kind's answers to a message)."""
        if cell.outcome >= 0:  # what it persisted leaves the pass's list (its appends are the list's last)
            del self._appends[cell.outcome:]
            cell.outcome = -1
            cell.states = cell.old = cell.new = None
        cell.outbox = None
        cell.nxt = None
        self._resolve_error(target, idx, exc)
        if msg is not None and isinstance(exc, cell.kind.reply_errors):
            if target is None:
                log.warning("tell failed", actor_kind=cell.kind.name, actor_key=cell.key,
                            message_type=type(msg).__name__, error=repr(exc))
            return
        self._crash(cell, msg, exc)

    def _launch(self) -> None:
        """Hand the pass's appends to the log together and watch for their outcome: one future for the pass."""
        flight, self._flight = self._flight, []
        appends, self._appends = self._appends, []
        try:
            done = self._submit_many(appends)
        except Exception as exc:  # the log is closed or failed: as a commit that failed, for every step of the pass
            for cell in flight:
                cell.outcome = -1
                cell.states = cell.old = cell.new = None
                self._fail_step(cell, exc)
            return
        self._in_flight += len(flight)
        done.add_done_callback(lambda f: self._landed(flight, f))

    def _landed(self, flight: list[Ctx], done: asyncio.Future[list[Record | BaseException]]) -> None:
        """The commits holding a pass's appends have landed (or failed): adopt, tell the runtime, run hooks, then
        release. ``done`` holds each append's record or error, in the order of the pass (``Ctx.outcome`` says where a
        step's start)."""
        self._in_flight -= len(flight)
        if self._state != _OPEN or done.cancelled():
            if self._state == _OPEN and self._ready:  # what waited for this landing (_FLIGHT) goes on
                self._kick()
            return
        results = done.result()
        world = self.world
        hooks = self.hooks if self.hooks else None
        faults = self.faults
        notify = self.on_commit is not None
        plain = faults is None and hooks is None
        batch: list[Committed] = []
        slow: list[tuple[Ctx, BaseException | None, list[tuple[Hook, Record, Any]] | None]] = []
        last, last_at = world.last_seq, world.last_at
        adopted = 0  # committed records adopted: World.applied counts them (the Snapshotter's consistent point)
        for cell in flight:
            k = cell.kind
            # Set for every cell in a flight (entity kinds only persist): no asserts in this loop.
            table: dict[str, Any] = k.table  # type: ignore[assignment]
            off = cell.outcome
            key = cell.key
            cell.outcome = -1
            cell.blocked = _FREE
            states = cell.states
            if plain and states is None:  # the common case (one event), kept short
                rec = results[off]
                if type(rec) is not Record:
                    slow.append((cell, rec, None))  # type: ignore[arg-type]  # an exception
                    continue
                new = cell.new
                table[key] = new
                adopted += 1
                if k.adopt is not None:
                    k.adopt(cell.old, new)
                if rec.seq > last:
                    last, last_at = rec.seq, rec.at
                if notify:
                    batch.append(Committed(rec, cell.old, new))
                if cell.outbox is not None or cell.nxt is not None or cell.mbox or k.keep:
                    slow.append((cell, None, None))
                    continue
                # Nothing else to release: reply, and the actor is idle again (replies go to futures and to
                # the gathers of asking actors, whose next steps run later: the runtime hears of the commit
                # first).
                target = cell.rtarget
                if target is not None:
                    value = cell.rvalue
                    cell.rvalue = cell.rtarget = None
                    if type(target) is _Gather:
                        target.replies[cell.ridx] = value
                        target.left -= 1
                        if target.left == 0:
                            self._gathered(target)
                    elif not target.done():
                        target.set_result(value)
                cell.ftarget = None
                crashes = cell.crashes
                if crashes:
                    if k.cells.get(key) is cell:
                        self._drop(cell)
                    continue
                cells = k.cells
                got = cells.pop(key, None)  # one lookup: the cell is in its kind's table (unless it was stopped)
                if got is not cell:
                    if got is not None:
                        cells[key] = got
                elif crashes is None and not cell.queued and k.shared is not None:
                    free = k.free
                    if len(free) < _POOL:
                        cell.scratch = cell.state = cell.old = cell.new = None  # it holds nothing of the entity
                        free.append(cell)
                continue
            error: BaseException | None = None
            waits: list[tuple[Hook, Record, Any]] = []
            if states is None:
                olds: list[Any] = [cell.old]
                news: list[Any] = [cell.new]
            else:
                olds = states
                news = states[1:]
                news.append(cell.new)
            cell.states = None
            n = len(olds)
            for rec, old, new in zip(results[off:off + n], olds, news, strict=True):
                if isinstance(rec, BaseException):
                    error = rec
                    break
                table[key] = new
                adopted += 1
                if k.adopt is not None:
                    k.adopt(old, new)
                if rec.seq > last:
                    last, last_at = rec.seq, rec.at
                lost = False
                if faults is not None and error is None:
                    try:
                        faults.check("notify", k.name, key, rec.event.event_name)
                    except Exception as e:  # the notification is lost; the actor crashes after its commit
                        error = e
                        lost = True
                if notify and not lost:
                    batch.append(Committed(rec, old, new))
                if hooks is not None:
                    hooks.run(rec, old, new, waits)
            slow.append((cell, error, waits or None))
        world.last_seq, world.last_at = last, last_at
        world.applied += adopted
        if batch and self.on_commit is not None:
            try:
                self.on_commit(batch)
            except Exception as exc:  # a bug in the runtime's notification: the actors of the batch recover
                log.error("commit notification failed", exc_info=exc)
                slow = [(c, e if e is not None else exc, w) for c, e, w in slow]
        for cell, error, held in slow:
            if error is not None:
                self._fail_step(cell, error if isinstance(error, Exception) else CommitError(repr(error)))
                if held:  # the actor restarts at once; its hooks still run, in order
                    self._spawn(_await_hooks(held))
            elif held:
                cell.blocked = _HOOKS
                self._spawn(self._hooks_then_release(cell, cell.epoch, held))
            else:
                self._release(cell)
        self._dispatch()

    def _release(self, cell: Ctx) -> None:
        """The cell's step is committed (and its hooks have run): release its effects, go on."""
        value, target, idx = cell.rvalue, cell.rtarget, cell.ridx
        cell.rvalue = cell.rtarget = None
        self._after(cell, value, target, idx)
        if cell.mbox and not cell.queued and not cell.blocked:
            cell.queued = True
            self._ready.append(cell)
        elif not cell.mbox and not cell.blocked and not cell.kind.keep:
            self._drop(cell)

    async def _hooks_then_release(self, cell: Ctx, epoch: int, waits: list[tuple[Hook, Record, Any]]) -> None:
        await _await_hooks(waits)
        if self._state != _OPEN or cell.epoch != epoch or cell.blocked != _HOOKS:
            return
        cell.blocked = _FREE
        self._release(cell)
        self._kick()

    # -- evicted entities (actors/_evict.py) ---------------------------------------------------------------------
    def _load(self, cell: Ctx) -> None:
        """Hold a new cell of an evicted entity while its state is folded back from the log (one load, by kind, for
        every cell that needed one in the same turn); its messages wait in its mailbox."""
        cell.blocked = _LOAD
        loading = self._loading
        if not loading:
            self._spawn(self._load_cells())
        loading.setdefault(cell.kind.name, []).append(cell)

    async def _load_cells(self) -> None:
        while self._loading and self._state == _OPEN:
            batch, self._loading = self._loading, {}
            for kind, cells in batch.items():
                error: Exception | None = None
                try:
                    if self.log is None:
                        raise EntityEvicted(kind, cells[0].key)
                    await self.world.load(self.log, kind, [c.key for c in cells])
                except Exception as exc:
                    log.error("loading evicted entities failed", actor_kind=kind, entities=len(cells), error=repr(exc))
                    error = exc
                if self._state != _OPEN:
                    return
                for cell in cells:
                    cell.blocked = _FREE
                    if error is not None:  # as a handler that raised: each message's asker gets the error
                        for _msg, target, idx in cell.mbox:
                            self._resolve_error(target, idx, error)
                        cell.mbox.clear()
                        self._drop(cell)
                    elif cell.mbox and not cell.queued:
                        cell.queued = True
                        self._ready.append(cell)
            self._kick()

    def evict_settled(self) -> dict[str, int]:
        """Evict from the World what :func:`~actors._evict.settled` finds settled and no cell is handling (a
        message queued, a step in flight); return how many per kind (docs/restart.md)."""
        out: dict[str, int] = {}
        for kind, ids in settled(self.world).items():
            k = self._kinds.get(kind)
            cells = k.cells if k is not None else {}
            gone = [i for i in ids if i not in cells]
            out[kind] = self.world.evict(kind, gone)
            if self.log is not None:  # their tips follow them out of memory (read from the log if they move again)
                self.log.forget_tips(kind, gone)
        return out

    def _spawn(self, coro: Any) -> None:
        tg = self._tg
        if tg is None:  # pragma: no cover - the kernel runs inside its task group
            coro.close()
            return
        tg.start_soon(lambda: coro)

    def _fail_step(self, cell: Ctx, exc: Exception) -> None:
        """The step's commit failed (or the notification of it): its asker gets the error, the actor crashes."""
        target, idx = cell.rtarget, cell.ridx
        cell.rvalue = cell.rtarget = None
        cell.outbox = None
        cell.nxt = None
        cell.blocked = _FREE
        self._resolve_error(target, idx, exc)
        self._crash(cell, None, exc)

    def _after(self, cell: Ctx, value: Any, target: Any, idx: int) -> None:
        """A step is over (and committed): release its tells, then its next step or its reply."""
        if cell.outbox is not None:
            out, cell.outbox = cell.outbox, None
            kinds = self._kinds
            for kind, key, msg in out:
                if kind is None:  # Ctx.after_commit
                    try:
                        key(msg)
                    except Exception as exc:
                        cell.nxt = None
                        self._resolve_error(target, idx, exc)
                        self._crash(cell, None, exc)
                        return
                    continue
                k = kinds.get(kind)
                if k is None:
                    log.error("tell to an unknown actor kind dropped", actor_kind=kind, actor_key=key)
                    continue
                self._send(k, key, msg, None, 0)
        nxt = cell.nxt
        if nxt is None:
            cell.ftarget = None
            if target is not None:
                self._resolve(target, idx, value)
            return
        cell.nxt = None
        cell.ftarget, cell.fidx = target, idx
        if len(nxt) == 2:
            cell.mbox.appendleft((_CONT, nxt[0], nxt[1]))
            if not cell.queued and not cell.blocked:
                cell.queued = True
                self._ready.append(cell)
            return
        kind, requests, fn = nxt
        k = self._kinds.get(kind)
        if k is None:
            self._crash(cell, None, UnknownActorKind(f"{cell!r} asked an unknown actor kind {kind!r}"))
            return
        gather = _Gather(cell, fn, len(requests))
        cell.blocked = _GATHER
        if not requests:
            self._gathered(gather)
            return
        faults = self.faults
        if (len(requests) < _SMALL or faults is not None or k.stopped
                or (k.evicted is not None and k.evicted.index)):  # _send: cells made at once; loads first
            for i, (key, msg) in enumerate(requests):
                if faults is not None and faults.hit("ask_timeout", kind, key, type(msg).__name__):
                    self._send(k, key, msg, None, 0)
                    self._resolve_error(gather, i, AskTimeout(kind, key, type(msg).__name__, 0.0))
                    continue
                self._send(k, key, msg, gather, i)
            return
        # One envelope to many actors (_send, inlined): an actor with a cell gets its part in its mailbox; the
        # parts for idle actors wait in the envelope, in the ready queue, their cells made at its turn (_Env).
        cells, ready = k.cells, self._ready
        env = _Env(k, gather, list(requests))  # a copy: the step may reuse its list
        keys = list(map(_first, requests))
        if cells.keys().isdisjoint(keys):  # the common case, in C: every actor asked is idle; each gets its claim
            had = len(cells)
            cells.update(zip(keys, repeat(env)))
            if len(cells) - had == len(keys):
                ready.append(env)
                return
            for key in keys:  # a key asked twice: the claims are taken back, and the loop below places each part
                cells.pop(key, None)
        skip: set[int] | None = None
        for i, (key, msg) in enumerate(requests):
            c = cells.get(key)
            if c is None:
                cells[key] = env
                continue
            if skip is None:
                skip = {i}
            else:
                skip.add(i)
            if type(c) is _Env:  # its first message waits in the queue (this envelope's, for a key asked twice)
                c.later(key, (msg, gather, i))
                continue
            c.mbox.append((msg, gather, i))
            if not c.queued and not c.blocked:
                c.queued = True
                ready.append(c)
        if skip is None or len(skip) < len(requests):
            env.skip = skip
            ready.append(env)

    def _resolve(self, target: Any, idx: int, value: Any) -> None:
        if type(target) is _Gather:
            target.replies[idx] = value
            target.left -= 1
            if target.left == 0:
                self._gathered(target)
        elif not target.done():
            target.set_result(value)

    def _resolve_error(self, target: Any, idx: int, exc: BaseException) -> None:
        if target is None:
            return
        if type(target) is _Gather:
            self._resolve(target, idx, exc)
        elif not target.done():
            target.set_exception(exc)

    def _gathered(self, g: _Gather) -> None:
        """Every reply is in: the asker's next step runs (unless it crashed meanwhile)."""
        cell = g.cell
        if cell.epoch != g.epoch or cell.blocked != _GATHER or cell.kind.cells.get(cell.key) is not cell:
            return
        cell.blocked = _FREE
        cell.mbox.appendleft((_CONT, g.fn, g.replies))
        if not cell.queued:
            cell.queued = True
            self._ready.append(cell)
        if not self._running:
            self._kick()

    # -- supervision -------------------------------------------------------------------------------------------
    def _crash(self, cell: Ctx, msg: Any, exc: Exception) -> None:
        """Supervise a crash: restart in place (a fresh behaviour, then ``restarted``), or stop and escalate."""
        k = cell.kind
        cell.epoch += 1
        cell.blocked = _FREE
        cell.scratch = None
        cell.ftarget = None
        history = cell.crashes = note_crash(cell.crashes, time.monotonic(), self.restart_window, self.max_restarts,
                                            k.name, cell.key, msg, exc, self.on_crash)
        k.crashes += 1
        if len(history) <= self.max_restarts:
            k.restarts += 1
            if k.shared is None:
                try:
                    cell.obj = k.factory(cell.key)
                except Exception as again:
                    self._crash(cell, None, again)
                    return
            cell.mbox.appendleft((_CONT, _restarted, (msg, exc)))
            if not cell.queued:
                cell.queued = True
                self._ready.append(cell)
            if not self._running:
                self._kick()
            return
        self._stop_failed(cell, ActorFailure(k.name, cell.key, exc, len(history) - 1))

    def _stop_failed(self, cell: Ctx, failure: ActorFailure) -> None:
        k = cell.kind
        reason = (f"{failure.restarts + 1} crashes within {self.restart_window:g} s, "
                  f"the last one {failure.error!r}")
        k.stopped[cell.key] = (reason, failure)
        if k.cells.get(cell.key) is cell:
            del k.cells[cell.key]
        tells = 0
        err_stopped = _stopped_error(k, cell.key, (reason, failure))
        for msg, target, idx in cell.mbox:
            if msg is _CONT:
                continue
            if target is None:
                tells += 1
            else:
                self._resolve_error(target, idx, err_stopped)
        cell.mbox.clear()
        if cell.queued:
            with contextlib.suppress(ValueError):
                self._ready.remove(cell)
            cell.queued = False
        if tells:
            log.warning("tells to a stopped actor dropped", actor_kind=k.name, actor_key=cell.key, count=tells)
        handler = self.on_escalate
        if handler is None:
            failure.error.add_note(f"actor {failure.kind} {failure.key!r} was stopped after {failure.restarts} "
                                   f"restarts, and there is no escalation target (on_escalate)")
            self._fatal(failure.error)
            return
        try:
            handler(failure)
        except Exception as exc:
            self._fatal(exc)


def _no_log(*_args: Any) -> asyncio.Future[list[Record | BaseException]]:
    raise TypeError("this kernel has no event log: its actors cannot persist")


def _restarted(ctx: Ctx, arg: tuple[Any, Exception]) -> Any:
    failed, error = arg
    return ctx.obj.restarted(ctx, failed, error)


def _stopped_error(k: _Kind, key: str, stopped: tuple[str, ActorFailure | None]) -> ActorStopped:
    return stopped_error(k.name, key, *stopped)


def replies_ok(replies: Iterable[Any]) -> list[Any]:
    """The replies of an :meth:`Ctx.ask_many`, raising the first error that is not :class:`ActorStopped` (an
    actor that crashed on its request, an ask timeout): the asker then crashes and re-derives its work."""
    out = list(replies)
    for r in out:
        if isinstance(r, Exception) and not isinstance(r, ActorStopped):
            raise r
    return out


_ = (math, WantbuildError)
