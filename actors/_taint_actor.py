"""The Taint actor: one taint's decision, and the work that follows from it, re-derived from its state.

A taint is created by one event (``TaintCreated``, committed together with the inbox command that asked for it)
and canceled by one (``TaintCanceled``). Everything else follows from the persisted state, level-triggered:

- while the taint is active, :meth:`TaintActor._apply` taints every Live partition it reaches (the named ones and,
  with ``cascade``, everything built from them through the lineage, within ``depth``), level by level so that a
  partition is tainted after its inputs, one ``PartitionTainted`` per partition, then records the wave
  (``TaintApplied``). It walks again until nothing is left: a run that read a tainted generation before the taint
  and became Live meanwhile is caught by the next pass (one that ends after the taint settles its partitions
  Tainted itself);
- once it is canceled, :meth:`TaintActor._restore` returns to Live every partition still Tainted by a canceled
  taint (not rebuilt since) that no active taint reaches, then records how many (``TaintRestored``).

Each step is idempotent, so a crash anywhere is healed by doing it again (``Reconcile``, sent by the supervisor
when it reconciles, and ``restarted``). Apply and restore are flows of the actor kernel: each chunk's asks go
out as one envelope (``ctx.ask_many``) and the next step runs when the replies are in. The work is asked of the
Partition actors in chunks, so a cascade over 100,000 partitions neither floods one mailbox nor holds the
supervisor.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from eventlog import get_logger

from ._actor import ActorStopped
from ._entity_actors import MESSAGES, GetState, Restore, Taint
from ._kernel import Behavior, Ctx
from ._lineage import cascade, covered
from ._partition import PartitionState, PartitionStatus
from ._taint import TaintApplied, TaintCanceled, TaintCreated, TaintRestored, TaintState, TaintStatus
from ._world import World

log = get_logger("wantbuild.actors")

CHUNK = 2000
"""Partitions asked at once while tainting or restoring (one ``ask_many``)."""
MAX_PASSES = 8
"""Walks of one apply before it gives up on reaching a fixpoint (each pass only finds what became Live during
the previous one; the next reconcile goes on)."""


class CreateTaint(msgspec.Struct, frozen=True):
    """Create the taint (idempotent: an existing one is returned). ``command``: the inbox command to complete in
    the same transaction, ``(command id, result)``."""

    event: TaintCreated
    command: tuple[int, dict[str, Any]] | None = None


class CancelTaint(msgspec.Struct, frozen=True):
    """Cancel the taint (a canceled one is returned as it is); its partitions are then restored."""

    reason: str
    command: tuple[int, dict[str, Any]] | None = None


class ApplyTaint(msgspec.Struct, frozen=True):
    """Taint what the taint reaches and is Live; record the wave."""


class RestoreTaints(msgspec.Struct, frozen=True):
    """Restore what canceled taints tainted and nothing else reaches; record it."""


class ReconcileTaint(msgspec.Struct, frozen=True):
    """Do what the taint's state says is left: apply (active) or restore (canceled, not restored yet)."""


class StayedLive(msgspec.Struct, frozen=True):
    """To the supervisor: these partitions were leaving Live (``EntityEnv.leaving_live``) and stayed Live; a want
    on them that was held back from success may succeed now."""

    refs: tuple[str, ...]


TAINT_MESSAGES = MESSAGES["taint"]


class _Wave:
    """A taint's apply or restore in progress (in its cell: transient, re-derived after a crash)."""

    __slots__ = ("done", "i", "levels", "passes", "refs", "todo")

    def __init__(self) -> None:
        self.passes = 0
        self.levels: list[Any] = []
        self.todo: list[Any] = []
        self.i = 0
        self.refs: list[str] = []
        self.done = 0


class TaintActor(Behavior):
    """A taint: created and canceled once; its wave (apply) and its restore are flows of the kernel, asked of the
    Partition actors a chunk at a time (``ctx.ask_many``), their progress in the cell, re-derived after a crash."""

    def __init__(self, world: World, leaving_live: Counter[str]) -> None:
        self.world = world
        self.leaving_live = leaving_live

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        st: TaintState | None = ctx.state
        if isinstance(msg, CreateTaint):
            if st is not None:  # a command delivered again, or a second ask: it exists
                return st
            new = ctx.persist(msg.event, msg.command)
            ctx.tell("taint", ctx.key, ApplyTaint())
            return new
        if isinstance(msg, CancelTaint):
            if st is None or st.terminal:
                return st
            canceled = ctx.persist(TaintCanceled(reason=msg.reason, command_id=msg.command[0] if msg.command
                                                 else None), msg.command)
            ctx.tell("taint", ctx.key, RestoreTaints())
            return canceled
        if isinstance(msg, ApplyTaint):
            return self._apply(ctx, None)
        if isinstance(msg, RestoreTaints):
            return self._restore(ctx, None)
        if isinstance(msg, ReconcileTaint):
            return self._reconcile(ctx, None)
        if isinstance(msg, GetState):
            return st
        raise TypeError(f"taint {ctx.key}: unexpected message {msg!r}")

    def restarted(self, ctx: Ctx, failed: Any, error: Exception) -> Any:
        return self._reconcile(ctx, None)

    def _reconcile(self, ctx: Ctx, _: Any) -> Any:
        st: TaintState | None = ctx.state
        if st is None:
            return None
        if st.active:
            return self._apply(ctx, None)
        if st.restored is None:
            return self._restore(ctx, None)
        return st

    # -- apply: taint every Live partition the taint reaches, level by level; record the wave ---------------
    def _apply(self, ctx: Ctx, _: Any) -> Any:
        st: TaintState | None = ctx.state
        if st is None or not st.active:
            return st
        ctx.scratch = _Wave()
        return self._apply_pass(ctx, None)

    def _apply_pass(self, ctx: Ctx, _: Any) -> Any:
        st: TaintState = ctx.state
        wave: _Wave = ctx.scratch
        world = self.world
        if wave.passes >= MAX_PASSES:
            log.warning("taint cascade did not settle; the next reconcile goes on", taint=st.taint_id)
            return self._applied(ctx, cascade(world, st))
        wave.passes += 1
        levels = cascade(world, st)
        todo = [r for level in levels for r in level if (p := world.partitions.get(r.ref)) is not None
                and p.status is PartitionStatus.LIVE and p.generation == r.generation]
        if not todo:
            return self._applied(ctx, levels)
        wave.todo, wave.i = todo, 0
        return self._apply_chunk(ctx, None)

    def _apply_chunk(self, ctx: Ctx, _: Any) -> Any:
        st: TaintState = ctx.state
        wave: _Wave = ctx.scratch
        chunk = wave.todo[wave.i:wave.i + CHUNK]  # in level order: a partition after its inputs
        if not chunk:
            return self._apply_pass(ctx, None)  # walk again: what became Live meanwhile
        wave.i += len(chunk)
        wave.refs = [r.ref for r in chunk]
        self.leaving_live.update(wave.refs)  # before any Taint is sent: a want deciding now sees them leaving
        ctx.ask_many("partition", [
            (r.ref, Taint(st.reason if r.depth == 0 else f"built from {r.via}, tainted by {st.taint_id}: {st.reason}",
                          taint_id=st.taint_id, depth=r.depth, via=r.via, generation=r.generation)) for r in chunk],
            self._chunk_tainted)
        return None

    def _chunk_tainted(self, ctx: Ctx, replies: list[Any]) -> Any:
        wave: _Wave = ctx.scratch
        leaving = self.leaving_live
        refs = wave.refs
        for ref in refs:
            leaving[ref] -= 1
            if leaving[ref] <= 0:
                del leaving[ref]
        stayed = tuple(ref for ref, reply in zip(refs, replies, strict=True)
                       if not (isinstance(reply, PartitionState) and reply.status is PartitionStatus.TAINTED))
        if stayed:
            ctx.tell("supervisor", "supervisor", StayedLive(stayed))
        self._raise_unexpected(replies)
        return self._apply_chunk(ctx, None)

    def _applied(self, ctx: Ctx, levels: list[Any]) -> Any:
        st: TaintState = ctx.state
        world = self.world
        ctx.scratch = None
        held = sum(1 for level in levels for r in level if (p := world.partitions.get(r.ref)) is not None
                   and p.status is PartitionStatus.TAINTED and p.tainted_by == st.taint_id)
        if held != st.tainted or st.status is TaintStatus.APPLYING:
            return ctx.persist(TaintApplied(partitions=held))
        return st

    # -- restore: return to Live what canceled taints tainted, not rebuilt since, that no active taint reaches --
    def _restore(self, ctx: Ctx, _: Any) -> Any:
        st: TaintState | None = ctx.state
        if st is None or st.active:
            return st
        world = self.world
        canceled = {t.taint_id for t in world.taints.values() if not t.active}
        candidates = [p for p in world.partitions.values()
                      if p.status is PartitionStatus.TAINTED and p.tainted_by in canceled]
        keep = covered(world, [t for t in world.taints.values() if t.active]) if candidates else set()
        wave = ctx.scratch = _Wave()
        wave.todo = [p for p in candidates if p.ref not in keep]
        return self._restore_chunk(ctx, None)

    def _restore_chunk(self, ctx: Ctx, _: Any) -> Any:
        st: TaintState = ctx.state
        wave: _Wave = ctx.scratch
        chunk = wave.todo[wave.i:wave.i + CHUNK]
        if not chunk:
            ctx.scratch = None
            if st.restored is None or wave.done:
                return ctx.persist(TaintRestored(partitions=wave.done))
            return st
        wave.i += len(chunk)
        ctx.ask_many("partition", [
            (p.ref, Restore(p.tainted_by or "", p.generation, f"taint {p.tainted_by} canceled: {st.canceled_reason}"))
            for p in chunk], self._chunk_restored)
        return None

    def _chunk_restored(self, ctx: Ctx, replies: list[Any]) -> Any:
        wave: _Wave = ctx.scratch
        wave.done += sum(1 for reply in replies if isinstance(reply, PartitionState)
                         and reply.status is PartitionStatus.LIVE)
        self._raise_unexpected(replies)
        return self._restore_chunk(ctx, None)

    @staticmethod
    def _raise_unexpected(replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ActorStopped):
                raise reply  # the crash's reconcile does it again; a stopped actor is given up on elsewhere
