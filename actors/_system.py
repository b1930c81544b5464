"""The generic actor base: mailboxes, ask/tell, supervision, passivation.

An **actor** is one asyncio task that owns a bounded mailbox and handles one message at a time, in the order
the messages arrived. Actors are *virtual*: addressed by ``(kind, key)``, activated by their first message
(``factory(key)`` -> :meth:`Actor.on_start` -> messages), passivated when idle (the task ends, instance and
mailbox are released), activated again by the next message. Memory grows with the *active* actors, never with
every key ever seen.

Errors (all derive from :class:`eventlog.WantbuildError`)::

    WantbuildError
     ├── AskTimeout(TimeoutError)          no reply within the ask's timeout; names kind, key, message type
     ├── ActorStopped(RuntimeError)        the actor was stopped (crash limit or stop_actor); revive() re-enables
     ├── ActorSystemClosed(RuntimeError)   the system is not running (not entered yet, closing or closed)
     ├── AskDeadlock(RuntimeError)         an actor asked itself (or told itself with its mailbox full)
     └── UnknownActorKind(LookupError)     no factory registered for the kind

Semantics (the *when* and *why*):

- **tell** returns once the message is in the mailbox. A full mailbox makes the sender wait (backpressure); it
  never raises into the sender. :meth:`ActorSystem.try_tell` is the non-blocking variant.
- **ask** sends ``(message, future)`` and waits for the handler's return value. The timeout covers the wait for
  room in the mailbox and for the reply; it fires up to 1/32 of itself late (deadlines are bucketed), never
  early. A timed-out ask is *not* withdrawn: the actor still handles the message, and its reply is dropped. If
  the handler raises, the asker gets that exception.
- **Supervision**: a handler (or ``factory``, ``on_start`` or ``on_restart``) that raises is logged (``actor
  crashed``, with ``actor_kind``, ``actor_key``, ``message_type`` and ``exc_info``), reported to ``on_crash`` if
  set, and the actor restarts in place: a fresh instance from the factory, whose ``on_start`` reloads the last
  committed state, then ``on_restart(message, error)``, which re-derives from that state the work the lost
  message was doing (the message itself is not handled again: messages are hints, the state is the truth);
  the mailbox is kept. More
  than ``max_restarts`` crashes within ``restart_window`` seconds stop the actor (no backoff, no retrying
  forever): the asks waiting in its mailbox raise :class:`ActorStopped`, its queued tells are dropped (one
  warning), and the failure is escalated: told to the kind's ``escalate_to`` actor and/or passed to
  ``on_escalate``. With neither, or when ``on_escalate`` raises, the failure is fatal: it is raised in the
  system's task group, which cancels the ``async with ActorSystem()`` block and surfaces as an
  ``ExceptionGroup``, as a failed task would. A key's crash history survives passivation (for
  ``restart_window``), so a poison message cannot dodge the limit by passivating in between. Exceptions listed
  in :attr:`Actor.reply_errors` are answers, not crashes: the asker gets them, nothing restarts.
- **Stopped actors** (crash limit, or :meth:`ActorSystem.stop_actor`): asks raise :class:`ActorStopped` naming
  the actor; tells are *dropped with a warning log* (``tell to a stopped actor dropped``), and ``try_tell``
  returns ``True`` for them (there is nothing to retry). :meth:`ActorSystem.revive` re-enables the key.
- **Passivation**: with ``passivate_after=0`` an actor ends as soon as its mailbox is empty (after one round of
  the event loop, so that a ping-pong partner's next message does not cost a reactivation); with ``t > 0``
  after ``t`` idle seconds (up to ``t/32`` later); with ``None`` never. The decision "mailbox empty ->
  deregister" is taken with no ``await`` in between, so a later tell finds no actor and activates a fresh one:
  no message is lost. ``on_stop`` runs *after* deregistration, and a new incarnation of the key waits until the
  old one has finished before its ``on_start``.
- **Deadlocks**: an actor that asks itself would wait for itself: that raises :class:`AskDeadlock` at once, as
  does telling itself with its own mailbox full. Cycles through other actors (A asks B while B asks A) are not
  detected; the ask timeout ends them.
- **Shutdown**: leaving ``async with ActorSystem() as system`` (or :meth:`ActorSystem.aclose`) cancels every
  actor task and waits for all of them, shielded. Queued tells are dropped, asks still in mailboxes raise
  :class:`ActorSystemClosed`, ``on_stop`` runs for the actors that had started. No task outlives the block, and
  a cancellation of the block propagates out of it unchanged.

Design notes (measured on the project's 2-core machine, Python 3.11; see ``bench/actor_pingpong.py``):

- *Spawning.* Actor tasks are created with ``loop.create_task``, not an anyio task group: ``start_soon`` costs
  ~15 us per task against ~3 us, and the runtime activates an actor for most partition messages. The tasks stay
  structured: the system tracks each one, cancels and awaits all of them (shielded) when it closes, and any
  exception that escapes an actor's supervision is raised in the system's anyio task group, failing the
  ``async with`` block. The anyio task group is there for that, and for cancelling the block.
- *Mailboxes.* Each activation's mailbox is built into its cell (:class:`_Cell`): a deque with a bound, one
  wake-up future for the actor, and an ordered dict of senders waiting for room. The semantics are those of an
  anyio memory object stream: bounded; a full mailbox makes the sender wait, in FIFO order, and a waiting
  sender's item moves into the mailbox the moment room is made (nobody jumps the queue); closing stops the actor
  once drained; a waiting sender whose mailbox closes gets its item back (and looks the key up again). Why not
  the stream itself, measured side by side with the same actor code: creating one (a state dataclass, a deque,
  two OrderedDicts, two stream objects) costs ~5.9 us, and every wait of an idle actor allocates an Event, a
  receiver record and a TaskInfo. With streams, activation+passivation took 2.5x as long, waking idle actors
  7.5x as long, and an idle active actor took ~7.3 KB instead of ~2.6 KB (asks: about even).
- *Hot paths.* ``tell``: two dict lookups and an append (tells travel without an envelope). ``ask``: one future,
  one envelope, and a set insert into a bucketed timeout wheel (:class:`_Wheel`) instead of a ``TimerHandle``
  per ask (which cost ~40% of an ask). The actor drains its mailbox without yielding (up to 64 messages in a
  row, then it yields for fairness), and yields once before it waits or passivates.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import types
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import anyio
import anyio.abc

from eventlog import get_logger

from ._actor import (
    DEFAULT,
    Actor,
    ActorContext,
    ActorFailure,
    ActorRef,
    ActorStopped,
    ActorSystemClosed,
    ActorSystemStats,
    AskDeadlock,
    AskTimeout,
    FatalSink,
    KindStats,
    UnknownActorKind,
    _Default,
    _retrieve,
    note_crash,
    stopped_error,
)
from ._faults import Faults
from ._mailbox import (
    _CURRENT,
    _EMPTY,
    _IDLE,
    _Ask,
    _ask_expired,
    _Cell,
    _idle_expired,
    _Kind,
    _MailboxClosed,
    _Stopped,
    _yield,
)
from ._wheel import _Wheel

__all__ = ["ActorSystem"]


log = get_logger("wantbuild.actors")

M = TypeVar("M")

_START_BATCH: Final = 32
"""``tell`` yields once this many activated actors wait for their first step, so a loop telling new keys keeps
at most this many actors starting instead of piling up a task per key."""

_FAIR_BURST: Final = 64
"""An actor yields after this many messages handled back to back, so a deep mailbox cannot starve the loop."""


_BASE_ON_START: Final = Actor.on_start
_BASE_ON_STOP: Final = Actor.on_stop
_BASE_ON_RESTART: Final = Actor.on_restart


def _stopped_error(k: _Kind, key: str, stopped: _Stopped) -> ActorStopped:
    return stopped_error(k.name, key, stopped.reason, stopped.failure)


def _failed(loop: asyncio.AbstractEventLoop, exc: BaseException) -> asyncio.Future[Any]:
    fut = loop.create_future()
    fut.set_exception(exc)
    return fut


def _check_mailbox_size(size: float) -> float:
    if not (size == math.inf or (isinstance(size, int) and size >= 1)):
        raise ValueError(f"mailbox_size must be an int >= 1 or math.inf, not {size!r}")
    return size


def _check_passivate_after(value: float | None) -> float | None:
    if value is not None and not value >= 0:
        raise ValueError(f"passivate_after must be None or a number >= 0, not {value!r}")
    return value


_NEW, _OPEN, _CLOSING, _CLOSED = range(4)


class ActorSystem(FatalSink):
    """Owns the actors: an async context manager with one anyio task group.

    ``async with ActorSystem(...) as system:`` -- register kinds, then ``tell``/``ask`` by ``(kind, key)``.
    Leaving the block cancels and awaits every actor. ``on_escalate`` may also be assigned after construction.
    """

    def __init__(self, *, mailbox_size: int = 256, passivate_after: float | None = 0.0, max_restarts: int = 3,
                 restart_window: float = 60.0, ask_timeout: float | None = 30.0,
                 on_escalate: Callable[[ActorFailure], Awaitable[None] | None] | None = None,
                 on_crash: Callable[[str, str, Any, Exception], None] | None = None) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, not {max_restarts!r}")
        if not restart_window > 0:
            raise ValueError(f"restart_window must be > 0, not {restart_window!r}")
        if ask_timeout is not None and not ask_timeout > 0:
            raise ValueError(f"ask_timeout must be None or > 0, not {ask_timeout!r}")
        self.mailbox_size = _check_mailbox_size(mailbox_size)
        self.passivate_after = _check_passivate_after(passivate_after)
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.ask_timeout = ask_timeout
        self.on_escalate = on_escalate
        self.faults: Faults | None = None
        """Faults to inject (drills only): ``handler`` before a handler runs, ``ask_timeout`` on an ask."""
        self.on_crash = on_crash
        """``on_crash(kind, key, message, error)``: called (synchronously) for every crash, restarted or not, so a
        coordinator can reconcile what it derived from the lost message. An error it raises is logged."""
        self._kinds: dict[str, _Kind] = {}
        self._registry: dict[str, dict[str, _Cell]] = {}  # kind -> its active actors (the _Kind.actors dicts)
        self._running: set[_Cell] = set()  # every cell whose task has not finished
        self._starting = 0  # activated actors whose task has not taken its first step
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wheels: dict[float, _Wheel] = {}
        self._ask_wheel: _Wheel | None = None

    def __repr__(self) -> str:
        state = ("new", "open", "closing", "closed")[self._state]
        return f"<ActorSystem {state}, {len(self._running)} actors, kinds {sorted(self._kinds)}>"

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> ActorSystem:
        if self._state != _NEW:
            raise RuntimeError("an ActorSystem can be entered only once")
        self._loop = asyncio.get_running_loop()
        if self.ask_timeout is not None:
            self._ask_wheel = self._wheels[self.ask_timeout] = _Wheel(self._loop, self.ask_timeout, _ask_expired)
        await self._open_task_group()
        self._state = _OPEN
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: types.TracebackType | None) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            await self._close_task_group(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Cancel every actor and wait until all have finished. Idempotent; safe to call concurrently."""
        if self._state == _NEW:
            self._state = _CLOSED
            return
        if self._state == _OPEN:
            self._state = _CLOSING
            for registry in self._registry.values():
                registry.clear()  # later tells meet a closed system, not a doomed mailbox
            for cell in list(self._running):
                cell.closed = True
                if cell.task is not None:
                    cell.task.cancel()
        with anyio.CancelScope(shield=True):
            while self._running:
                tasks = [c.task for c in self._running if c.task is not None and not c.task.done()]
                if tasks:
                    await asyncio.wait(tasks)
                for cell in list(self._running):
                    if cell.task is None or cell.task.done():
                        self._finish(cell)  # cancelled before its first step: its code never ran
        for wheel in self._wheels.values():
            wheel.close()
        for k in self._kinds.values():
            if k.idle_wheel is not None:
                k.idle_wheel.close()
        self._state = _CLOSED

    # -- registration ----------------------------------------------------------------------------------------
    def register(self, kind: str, factory: Callable[[str], Actor[Any]], *,
                 passivate_after: float | _Default | None = DEFAULT,
                 mailbox_size: float | _Default = DEFAULT,
                 escalate_to: tuple[str, str] | None = None, linger: bool = True) -> None:
        """Register the factory of ``kind``: ``factory(key)`` returns a fresh, not yet started instance.

        ``passivate_after`` and ``mailbox_size`` override the system's settings for this kind (the mailbox of a
        coordinator that must never block its senders may be ``math.inf``). ``escalate_to=(kind, key)``: an
        actor of this kind stopped by the crash limit is reported to that actor as an :class:`ActorFailure`
        message (as well as to ``on_escalate``). ``linger``: with its mailbox empty, the actor first lets the
        loop go round once, so a partner answering at once finds it still active (a request/reply exchange,
        a job run reporting its outcome); ``False`` for a kind whose next message is rarely that close, which
        then waits or passivates one loop step sooner.
        """
        if kind in self._kinds:
            raise ValueError(f"actor kind {kind!r} is already registered")
        pa = (self.passivate_after if isinstance(passivate_after, _Default)
              else _check_passivate_after(passivate_after))
        size = self.mailbox_size if isinstance(mailbox_size, _Default) else _check_mailbox_size(mailbox_size)
        k = _Kind(kind, factory, pa, size, escalate_to, linger)
        self._kinds[kind] = k
        self._registry[kind] = k.actors

    def _kind(self, kind: str) -> _Kind:
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownActorKind(f"no actor kind {kind!r} is registered "
                                   f"(registered: {', '.join(sorted(self._kinds)) or 'none'})") from None

    # -- messaging -------------------------------------------------------------------------------------------
    async def tell(self, kind: str, key: str, msg: Any) -> None:
        """Put ``msg`` in the mailbox of ``(kind, key)``, activating the actor if needed.

        Waits while the mailbox is full. A tell to a stopped actor is dropped with a warning log.
        """
        try:
            cell = self._registry[kind][key]
        except KeyError:
            k = self._kind(kind)
            if key in k.stopped:
                self._drop(k, key, msg)
                return
            self._activate(k, key).offer(msg)  # a fresh mailbox has room
            if self._starting >= _START_BATCH:
                await _yield()  # let the new actors run: a loop telling new keys cannot pile up tasks
            return
        if not cell.offer(msg):
            await self._send_blocking(cell.kind, key, msg)

    def try_tell(self, kind: str, key: str, msg: Any) -> bool:
        """:meth:`tell` without waiting: ``False`` if the mailbox is full (the message was not sent)."""
        try:
            cell = self._registry[kind][key]
        except KeyError:
            k = self._kind(kind)
            if key in k.stopped:
                self._drop(k, key, msg)
                return True
            cell = self._activate(k, key)
        return cell.offer(msg)

    async def ask(self, kind: str, key: str, msg: Any, *, timeout: float | _Default | None = DEFAULT) -> Any:
        """Send ``msg`` and return the handler's reply; re-raise what the handler raised.

        Raises :class:`AskTimeout` after ``timeout`` seconds (default: the system's ``ask_timeout``; ``None``
        waits forever), :class:`ActorStopped`, :class:`ActorSystemClosed`, or :class:`AskDeadlock` when an
        actor asks itself.
        """
        try:
            cell = self._registry[kind][key]
        except KeyError:
            k = self._kind(kind)
            stopped = k.stopped.get(key)
            if stopped is not None:
                err = _stopped_error(k, key, stopped)
                raise err from err.__cause__
            me = _CURRENT.get()
            if me is not None and me.kind is k and me.key == key and me.task is asyncio.current_task():
                # asked from its own on_stop: the next incarnation would wait for this one to finish
                raise AskDeadlock(f"actor {kind} {key!r} asked itself {type(msg).__name__} while stopping: it "
                                  f"would wait for itself forever") from None
            cell = self._activate(k, key)
        else:
            if _CURRENT.get() is cell and cell.task is asyncio.current_task():
                raise AskDeadlock(f"actor {kind} {key!r} asked itself {type(msg).__name__}: it would wait for "
                                  f"itself forever (call the logic directly, or tell instead)")
        loop = self._loop
        assert loop is not None
        env = _Ask(msg, loop.create_future(), cell)
        wheel = self._ask_wheel if isinstance(timeout, _Default) else (
            None if timeout is None else self._wheel_for(timeout))
        if self.faults is not None and self.faults.hit("ask_timeout", kind, key, type(msg).__name__):
            env.future.add_done_callback(_retrieve)  # delivered, its reply never awaited: as a real timeout
            if cell.offer(env):
                raise AskTimeout(kind, key, type(msg).__name__, 0.0)
        if not cell.offer(env):
            return await self._ask_blocking(cell.kind, key, env, None if wheel is None else wheel.delay)
        if wheel is None:
            return await env.future
        bucket = wheel.add(env)
        try:
            return await env.future
        finally:
            bucket.discard(env)

    async def ask_many(self, kind: str, requests: Sequence[tuple[str, Any]], *,
                       return_exceptions: bool = False) -> list[Any]:
        """Ask many actors of one kind at once; the replies in request order.

        Every message is offered before any reply is awaited, so the actors work concurrently (and their
        appends share a group commit) without a task per ask. The first error raised by a handler is
        re-raised after every reply has arrived; with ``return_exceptions`` each error is returned in its
        reply's place instead. Uses the system's ``ask_timeout`` for each reply.
        """
        loop = self._loop
        assert loop is not None
        k = self._kind(kind)
        envs: list[_Ask | None] = []
        waits: list[Any] = []
        me = _CURRENT.get()
        if me is not None and (me.kind is not k or me.task is not asyncio.current_task()):
            me = None  # only the actor's own task can deadlock on its own key
        for key, msg in requests:
            if me is not None and me.key == key:
                # asking itself (a task of its own would not see it is the actor's): fail this one at once
                envs.append(None)
                waits.append(_failed(loop, AskDeadlock(f"actor {kind} {key!r} asked itself {type(msg).__name__} "
                                                       f"(ask_many): it would wait for itself forever")))
                continue
            cell = k.actors.get(key)
            if cell is None and key not in k.stopped and self._state == _OPEN:
                cell = self._activate(k, key)
            if cell is None:
                envs.append(None)  # stopped or closing: ask() raises the right error
                waits.append(asyncio.ensure_future(self.ask(kind, key, msg)))
                continue
            env = _Ask(msg, loop.create_future(), cell)
            if self.faults is not None and self.faults.hit("ask_timeout", kind, key, type(msg).__name__):
                env.future.add_done_callback(_retrieve)
                if cell.offer(env):
                    envs.append(None)
                    waits.append(_failed(loop, AskTimeout(kind, key, type(msg).__name__, 0.0)))
                    continue
            if cell.offer(env):
                envs.append(env)
                waits.append(None)
            else:  # a full mailbox: wait for room in a task of its own so the others still go out
                envs.append(None)
                waits.append(asyncio.ensure_future(self.ask(kind, key, msg)))
        wheel = self._ask_wheel
        buckets = [wheel.add(e) if (e is not None and wheel is not None) else None for e in envs]
        out: list[Any] = []
        first_error: BaseException | None = None
        try:
            for sent, wait in zip(envs, waits, strict=True):
                try:
                    out.append(await (sent.future if sent is not None else wait))
                except Exception as e:  # keep collecting: every message was sent
                    out.append(e if return_exceptions else None)
                    if first_error is None and not return_exceptions:
                        first_error = e
        finally:
            for maybe_env, bucket in zip(envs, buckets, strict=True):
                if bucket is not None and maybe_env is not None:
                    bucket.discard(maybe_env)
                if maybe_env is not None and not maybe_env.future.done():
                    # abandoned (the asker was cancelled): a late error must not be "never retrieved"
                    maybe_env.future.add_done_callback(_retrieve)
            for wait in waits:
                if wait is not None and not wait.done():
                    wait.cancel()
                    wait.add_done_callback(_retrieve)  # nobody awaits it any more: never "never retrieved"
        if first_error is not None:
            raise first_error
        return out

    def ref(self, kind: str, key: str) -> ActorRef:
        """A handle on ``(kind, key)`` with ``tell``/``try_tell``/``ask``; valid across passivation."""
        self._kind(kind)
        return ActorRef(self, kind, key)

    def _wheel_for(self, timeout: float) -> _Wheel:
        wheel = self._wheels.get(timeout)
        if wheel is None:
            if not timeout > 0:
                raise ValueError(f"an ask timeout must be None or > 0, not {timeout!r}")
            assert self._loop is not None
            if len(self._wheels) >= 64:  # many distinct timeouts: forget wheels rather than grow (their pending
                self._wheels.clear()      # buckets keep their timers)
                if self._ask_wheel is not None:
                    self._wheels[self._ask_wheel.delay] = self._ask_wheel
            wheel = self._wheels[timeout] = _Wheel(self._loop, timeout, _ask_expired)
        return wheel

    async def _ask_blocking(self, k: _Kind, key: str, env: _Ask, t: float | None) -> Any:
        """Ask with the mailbox full: the timeout covers the wait for room as well as the reply."""
        cm = asyncio.timeout(t)
        try:
            async with cm:
                await self._send_blocking(k, key, env)
                return await env.future
        except TimeoutError:
            if cm.expired():
                raise AskTimeout(k.name, key, type(env.msg).__name__, t or 0.0) from None
            raise

    async def _send_blocking(self, k: _Kind, key: str, item: Any) -> None:
        """Send into a full mailbox: wait for room, following the key across passivation and stops."""
        loop = self._loop
        assert loop is not None
        while True:
            cell = k.actors.get(key)
            if cell is None:
                stopped = k.stopped.get(key)
                if stopped is not None:
                    if type(item) is _Ask:
                        raise _stopped_error(k, key, stopped)
                    self._drop(k, key, item)
                    return
                cell = self._activate(k, key)
            if cell.offer(item):
                return
            if _CURRENT.get() is cell and cell.task is asyncio.current_task():
                raise AskDeadlock(f"actor {k.name} {key!r} told itself {type(item).__name__} with its own mailbox "
                                  f"full: it would wait for itself forever")
            if type(item) is _Ask:
                item.cell = cell
            try:
                await cell.put(item, loop)
                return
            except _MailboxClosed:
                continue  # passivated, stopped or closing while we waited: not delivered; look the key up again

    def _drop(self, k: _Kind, key: str, msg: Any) -> None:
        log.warning("tell to a stopped actor dropped", actor_kind=k.name, actor_key=key,
                    message_type=type(msg).__name__, reason=k.stopped[key].reason)

    # -- activation ------------------------------------------------------------------------------------------
    def _activate(self, k: _Kind, key: str) -> _Cell:
        if self._state != _OPEN:
            raise ActorSystemClosed("the actor system is not running " + (
                "(enter it first: `async with ActorSystem() as system`)" if self._state == _NEW
                else "(it is closing or closed)"))
        loop = self._loop
        assert loop is not None
        cell = _Cell(k, key)
        if k.crash_log:
            cell.crashes = k.crash_log.pop(key, None)
        prev = k.exiting.get(key) if k.exiting else None
        if prev is not None and prev.finished is None:
            prev.finished = loop.create_future()
        k.actors[key] = cell
        self._running.add(cell)
        self._starting += 1
        k.activations += 1
        cell.task = loop.create_task(self._run(cell, prev))
        return cell

    # -- the actor task --------------------------------------------------------------------------------------
    async def _run(self, cell: _Cell, prev: _Cell | None) -> None:
        self._starting -= 1
        _CURRENT.set(cell)
        k = cell.kind
        actor: Actor[Any] | None = None
        cur: Any = _EMPTY  # the message in hand, answered if we are cancelled mid-way
        try:
            if prev is not None and prev.finished is not None:
                await asyncio.wait([prev.finished])  # the old incarnation's on_stop; never cancels the future
            actor = await self._start(cell)
            if actor is None:
                return
            buf = cell.buf
            burst = 0
            while True:
                if buf:
                    cur = buf.popleft()
                    if cell.putters:
                        cell.refill()
                    burst += 1
                    if burst >= _FAIR_BURST:
                        burst = 0
                        await _yield()
                else:
                    burst = 0
                    if k.linger:
                        await _yield()  # one round for a ping-pong partner to answer before we wait or passivate
                        if buf:
                            continue
                    cur = await self._wait(cell)
                    if cur is _EMPTY:
                        break  # passivated, or stopped and drained
                if type(cur) is _Ask:
                    fut = cur.future
                    try:
                        if self.faults is not None:
                            self.faults.check("handler", k.name, cell.key, type(cur.msg).__name__)
                        result = await actor.handle(cur.msg)
                    except Exception as exc:
                        if not fut.done():
                            fut.set_exception(exc)
                        if not isinstance(exc, actor.reply_errors):
                            actor = await self._crashed(cell, cur.msg, exc)
                            if actor is None:
                                return
                    else:
                        if not fut.done():
                            fut.set_result(result)
                else:
                    try:
                        if self.faults is not None:
                            self.faults.check("handler", k.name, cell.key, type(cur).__name__)
                        await actor.handle(cur)
                    except Exception as exc:
                        if isinstance(exc, actor.reply_errors):
                            log.warning("tell failed", actor_kind=k.name, actor_key=cell.key,
                                        message_type=type(cur).__name__, error=repr(exc))
                        else:
                            actor = await self._crashed(cell, cur, exc)
                            if actor is None:
                                return
                cur = _EMPTY
            if cell.has_stop:
                await self._on_stop(cell, actor)
        except asyncio.CancelledError:
            if type(cur) is _Ask and not cur.future.done():
                cur.future.set_exception(self._closed_error(cell))
            self._abandon(cell, "its task was cancelled")
            if actor is not None and cell.has_stop:
                await self._on_stop(cell, actor)
            raise
        except GeneratorExit:  # pragma: no cover - the loop is being torn down under us: no await is possible
            raise
        except BaseException as exc:  # not a handler's Exception (those are supervised): a bug, or an interrupt
            if type(cur) is _Ask and not cur.future.done():
                cur.future.set_exception(self._closed_error(cell))
            self._abandon(cell, "its task failed")
            self._fatal(exc)
        finally:
            self._finish(cell)

    async def _wait(self, cell: _Cell) -> Any:
        """Wait for the next message with the mailbox empty. ``_EMPTY``: passivated, or closed and drained."""
        k = cell.kind
        pa = k.passivate_after
        loop = self._loop
        assert loop is not None
        buf = cell.buf
        idle = False
        while True:
            if buf:
                item = buf.popleft()
                if cell.putters:
                    cell.refill()
                return item
            if cell.closed:
                return _EMPTY
            if idle or (pa is not None and pa <= 0):
                self._passivate(cell)  # the mailbox is empty *now*: deregister before anything can await
                return _EMPTY
            getter = cell.getter = loop.create_future()
            if pa is None:
                await getter
            else:
                wheel = k.idle_wheel
                if wheel is None:
                    wheel = k.idle_wheel = _Wheel(loop, pa, _idle_expired)
                bucket = wheel.add(cell)
                try:
                    idle = (await getter) is _IDLE
                finally:
                    bucket.discard(cell)

    async def _start(self, cell: _Cell) -> Actor[Any] | None:
        """A fresh instance, started; ``None`` if it kept failing to start and was stopped."""
        k = cell.kind
        while True:
            try:
                actor = k.factory(cell.key)
                actor._context = ActorContext(self, k.name, cell.key)
                cls = type(actor)
                cell.has_stop = cls.on_stop is not _BASE_ON_STOP
                if cls.on_start is not _BASE_ON_START:
                    await actor.on_start()
                return actor
            except Exception as exc:
                cell.has_stop = False  # no instance has started: nothing to stop
                if not await self._crash_allowed(cell, None, exc):
                    return None

    async def _crashed(self, cell: _Cell, msg: Any, exc: Exception) -> Actor[Any] | None:
        """Supervise a handler's crash: restart in place (then ``on_restart``), or stop and escalate (``None``)."""
        while True:
            cell.has_stop = False  # no on_stop after a crash
            if not await self._crash_allowed(cell, msg, exc):
                return None
            actor = await self._start(cell)
            if actor is None or type(actor).on_restart is _BASE_ON_RESTART:
                return actor
            try:
                await actor.on_restart(msg, exc)
            except Exception as again:  # recovery crashed: that counts as a crash too (bounded by the limit)
                msg, exc = None, again
                continue
            return actor

    async def _crash_allowed(self, cell: _Cell, msg: Any, exc: Exception) -> bool:
        k = cell.kind
        loop = self._loop
        assert loop is not None
        history = cell.crashes = note_crash(cell.crashes, loop.time(), self.restart_window, self.max_restarts,
                                            k.name, cell.key, msg, exc, self.on_crash)
        k.crashes += 1
        if len(history) <= self.max_restarts:
            k.restarts += 1
            return True
        await self._stop_failed(cell, ActorFailure(k.name, cell.key, exc, len(history) - 1))
        return False

    async def _stop_failed(self, cell: _Cell, failure: ActorFailure) -> None:
        k = cell.kind
        reason = (f"{failure.restarts + 1} crashes within {self.restart_window:g} s, "
                  f"the last one {failure.error!r}")
        k.stopped[cell.key] = _Stopped(reason, failure)
        cell.crashes = None
        self._deregister(cell, barrier=False)  # a crashed instance has no on_stop to wait for
        dropped = self._fail_mailbox(cell, lambda: ActorStopped(k.name, cell.key, reason, failure))
        if dropped:
            log.warning("tells to a stopped actor dropped", actor_kind=k.name, actor_key=cell.key, count=dropped)
        await self._escalate(k, failure)

    async def _escalate(self, k: _Kind, failure: ActorFailure) -> None:
        handled = False
        if k.escalate_to is not None:
            handled = True
            try:
                await self.tell(*k.escalate_to, failure)
            except ActorSystemClosed:
                log.error("actor stopped during shutdown; escalation dropped", actor_kind=failure.kind,
                          actor_key=failure.key, error=repr(failure.error))
            except Exception as exc:
                self._fatal(exc)
        handler = self.on_escalate
        if handler is not None:
            handled = True
            try:
                res = handler(failure)
                if res is not None and inspect.isawaitable(res):
                    await res
            except Exception as exc:
                self._fatal(exc)
        if not handled:
            failure.error.add_note(f"actor {failure.kind} {failure.key!r} was stopped after {failure.restarts} "
                                   f"restarts, and there is no escalation target (on_escalate / escalate_to)")
            self._fatal(failure.error)

    async def _on_stop(self, cell: _Cell, actor: Actor[Any]) -> None:
        try:
            await actor.on_stop()
        except Exception as exc:
            log.error("actor on_stop failed", actor_kind=cell.kind.name, actor_key=cell.key, exc_info=exc)

    def _passivate(self, cell: _Cell) -> None:
        """Mailbox empty: deregister and close it. Synchronous on purpose (see the module docstring)."""
        k = cell.kind
        k.passivations += 1
        self._deregister(cell, barrier=cell.has_stop)
        cell.closed = True
        cell.drained = True
        if cell.crashes:
            self._stash_crashes(k, cell.key, cell.crashes)

    def _stash_crashes(self, k: _Kind, key: str, history: deque[float]) -> None:
        """Keep a passivated key's recent crash times, so crash, passivate, crash... still reaches the limit.

        Bounded: expired entries are swept whenever the log has doubled since the last sweep.
        """
        loop = self._loop
        assert loop is not None
        horizon = loop.time() - self.restart_window
        if history[-1] < horizon:
            return
        k.crash_log[key] = history
        if len(k.crash_log) > 2 * k.crash_log_swept + 64:
            for stale in [key for key, h in k.crash_log.items() if h[-1] < horizon]:
                del k.crash_log[stale]
            k.crash_log_swept = len(k.crash_log)

    def _deregister(self, cell: _Cell, barrier: bool) -> None:
        k = cell.kind
        if k.actors.get(cell.key) is cell:
            del k.actors[cell.key]
        if barrier:
            k.exiting[cell.key] = cell

    def _closed_error(self, cell: _Cell) -> ActorSystemClosed:
        return ActorSystemClosed(f"actor {cell.kind.name} {cell.key!r} was cancelled: the actor system is closing")

    def _fail_mailbox(self, cell: _Cell, error: Callable[[], BaseException]) -> int:
        """Close the mailbox and fail the asks still in it with ``error()``. Returns how many tells it dropped."""
        if cell.drained:
            return 0
        cell.drained = True
        cell.close()  # waiting senders get their items back and look again (and meet the stop or the shutdown)
        tells = 0
        for item in cell.buf:
            if type(item) is _Ask:
                if not item.future.done():
                    item.future.set_exception(error())
            else:
                tells += 1
        cell.buf.clear()
        return tells

    def _abandon(self, cell: _Cell, why: str) -> None:
        self._deregister(cell, barrier=False)
        if self._state == _OPEN:
            dropped = self._fail_mailbox(cell, lambda: ActorStopped(cell.kind.name, cell.key, why))
        else:
            dropped = self._fail_mailbox(cell, lambda: self._closed_error(cell))
        if dropped:
            log.debug("tells dropped", actor_kind=cell.kind.name, actor_key=cell.key, count=dropped, reason=why)

    def _finish(self, cell: _Cell) -> None:
        k = cell.kind
        if not cell.drained:  # ended without draining (cancelled before its first step, stop mid-start)
            self._abandon(cell, "its task ended")
        self._running.discard(cell)
        if k.actors.get(cell.key) is cell:
            del k.actors[cell.key]
        if k.exiting and k.exiting.get(cell.key) is cell:
            del k.exiting[cell.key]
        if cell.finished is not None and not cell.finished.done():
            cell.finished.set_result(None)
        cell.task = None

    # -- control ---------------------------------------------------------------------------------------------
    async def stop_actor(self, kind: str, key: str) -> None:
        """Stop ``(kind, key)`` until :meth:`revive`: it handles what is already queued, runs ``on_stop``, ends.

        Returns once it has finished. From the call on, asks raise :class:`ActorStopped` and tells are dropped
        with a warning.
        """
        k = self._kind(kind)
        k.stopped.setdefault(key, _Stopped("stopped by stop_actor", None))
        cell = k.actors.get(key) or k.exiting.get(key)
        if cell is None:
            return
        self._deregister(cell, barrier=True)
        cell.close()  # the actor drains its mailbox, then ends
        task = cell.task
        if task is not None and not task.done():
            await asyncio.wait([task])

    def revive(self, kind: str, key: str) -> None:
        """Re-enable a stopped actor, forgetting its crash history; its next message activates it."""
        k = self._kind(kind)
        k.stopped.pop(key, None)
        k.crash_log.pop(key, None)

    # -- inspection ------------------------------------------------------------------------------------------
    def is_active(self, kind: str, key: str) -> bool:
        return key in self._kind(kind).actors

    def is_stopped(self, kind: str, key: str) -> bool:
        return key in self._kind(kind).stopped

    def stopped(self, kind: str) -> dict[str, str]:
        """The stopped keys of ``kind`` with why each was stopped (until :meth:`revive`)."""
        return {key: st.reason for key, st in self._kind(kind).stopped.items()}

    def active_count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(k.actors) for k in self._kinds.values())
        return len(self._kind(kind).actors)

    def stats(self) -> ActorSystemStats:
        """A snapshot of the counters, per kind. Mailbox depths are summed over the active actors (O(active))."""
        kinds: dict[str, KindStats] = {}
        for name, k in self._kinds.items():
            depth = deepest = waiting = 0
            for cell in k.actors.values():
                n = len(cell.buf)
                depth += n
                deepest = max(deepest, n)
                waiting += cell.senders_waiting()
            kinds[name] = KindStats(len(k.actors), k.activations, k.passivations, k.restarts, k.crashes,
                                    len(k.stopped), depth, deepest, waiting)
        return ActorSystemStats(types.MappingProxyType(kinds))

