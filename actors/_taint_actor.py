"""The Taint actor: one taint's decision, and the work that follows from it, re-derived from its state.

A taint is created by one event (``TaintCreated``, committed together with the inbox command that asked for it)
and canceled by one (``TaintCanceled``). Everything else follows from the persisted state, level-triggered:

- while the taint is active, :meth:`TaintActor.apply` taints every Live partition it reaches (the named ones and,
  with ``cascade``, everything built from them through the lineage, within ``depth``), level by level so that a
  partition is tainted after its inputs, one ``PartitionTainted`` per partition, then records the wave
  (``TaintApplied``). It walks again until nothing is left: a run that read a tainted generation before the taint
  and became Live meanwhile is caught by the next pass (one that ends after the taint settles its partitions
  Tainted itself);
- once it is canceled, :meth:`TaintActor.restore` returns to Live every partition still Tainted by a canceled
  taint (not rebuilt since) that no active taint reaches, then records how many (``TaintRestored``).

Each step is idempotent, so a crash anywhere is healed by doing it again (``Reconcile``, sent by the supervisor
when it reconciles, and ``on_restart``). The work is asked of the Partition actors in chunks, so a cascade over
100,000 partitions neither floods one mailbox nor holds the supervisor.
"""

from __future__ import annotations

from typing import Any

import msgspec

from eventlog import get_logger

from ._actor import ActorStopped
from ._entity import EntityActor
from ._entity_actors import MESSAGES, GetState, Restore, Taint
from ._lineage import cascade, covered
from ._partition import PartitionState, PartitionStatus
from ._taint import TaintApplied, TaintCanceled, TaintCreated, TaintRestored, TaintState, TaintStatus

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


class TaintActor(EntityActor[TaintState]):
    kind = "taint"

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, CreateTaint):
            if self.state is not None:  # a command delivered again, or a second ask: it exists
                return self.state
            st = await self.persist(msg.event, command=msg.command)
            self.env.system.try_tell(self.kind, self.key, ApplyTaint())
            return st
        if isinstance(msg, CancelTaint):
            if self.state is None or self.state.terminal:
                return self.state
            canceled = await self.persist(TaintCanceled(reason=msg.reason, command_id=msg.command[0] if msg.command
                                                        else None), command=msg.command)
            self.env.system.try_tell(self.kind, self.key, RestoreTaints())
            return canceled
        if isinstance(msg, ApplyTaint):
            return await self.apply()
        if isinstance(msg, RestoreTaints):
            return await self.restore()
        if isinstance(msg, ReconcileTaint):
            return await self.reconcile()
        if isinstance(msg, GetState):
            return self.state
        raise TypeError(f"taint {self.key}: unexpected message {msg!r}")

    async def on_restart(self, failed: Any, error: Exception) -> None:
        await self.reconcile()

    async def reconcile(self) -> TaintState | None:
        st = self.state
        if st is None:
            return None
        if st.active:
            return await self.apply()
        if st.restored is None:
            return await self.restore()
        return st

    async def apply(self) -> TaintState | None:
        """Taint every Live partition the taint reaches, level by level; record the wave (see the module doc)."""
        st = self.state
        if st is None or not st.active:
            return st
        world = self.env.world
        for _ in range(MAX_PASSES):
            levels = cascade(world, st)
            todo = [r for level in levels for r in level if (p := world.partitions.get(r.ref)) is not None
                    and p.status is PartitionStatus.LIVE and p.generation == r.generation]
            if not todo:
                break
            for i in range(0, len(todo), CHUNK):  # in level order: a partition after its inputs
                chunk = todo[i:i + CHUNK]
                refs = [r.ref for r in chunk]
                leaving = self.env.leaving_live
                leaving.update(refs)  # before any Taint is sent: a want deciding now sees them leaving
                try:
                    replies = await self.env.system.ask_many("partition", [
                        (r.ref, Taint(st.reason if r.depth == 0 else f"built from {r.via}, tainted by "
                                      f"{st.taint_id}: {st.reason}", taint_id=st.taint_id, depth=r.depth,
                                      via=r.via, generation=r.generation)) for r in chunk], return_exceptions=True)
                finally:
                    for ref in refs:
                        leaving[ref] -= 1
                        if leaving[ref] <= 0:
                            del leaving[ref]
                stayed = tuple(ref for ref, reply in zip(refs, replies, strict=True)
                               if not (isinstance(reply, PartitionState) and reply.status is PartitionStatus.TAINTED))
                if stayed:
                    self.env.system.try_tell("supervisor", "supervisor", StayedLive(stayed))
                self._raise_unexpected(replies)
        else:
            log.warning("taint cascade did not settle; the next reconcile goes on", taint=st.taint_id)
            levels = cascade(world, st)
        held = sum(1 for level in levels for r in level if (p := world.partitions.get(r.ref)) is not None
                   and p.status is PartitionStatus.TAINTED and p.tainted_by == st.taint_id)
        if held != st.tainted or st.status is TaintStatus.APPLYING:
            return await self.persist(TaintApplied(partitions=held))
        return st

    async def restore(self) -> TaintState | None:
        """Return to Live what canceled taints tainted, not rebuilt since, and no active taint reaches."""
        st = self.state
        if st is None or st.active:
            return st
        world = self.env.world
        canceled = {t.taint_id for t in world.taints.values() if not t.active}
        candidates = [p for p in world.partitions.values()
                      if p.status is PartitionStatus.TAINTED and p.tainted_by in canceled]
        keep = covered(world, [t for t in world.taints.values() if t.active]) if candidates else set()
        todo = [p for p in candidates if p.ref not in keep]
        done = 0
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i:i + CHUNK]
            replies = await self.env.system.ask_many("partition", [
                (p.ref, Restore(p.tainted_by or "", p.generation,
                                f"taint {p.tainted_by} canceled: {st.canceled_reason}")) for p in chunk],
                return_exceptions=True)
            done += sum(1 for reply in replies if isinstance(reply, PartitionState)
                        and reply.status is PartitionStatus.LIVE)
            self._raise_unexpected(replies)
        if st.restored is None or done:
            return await self.persist(TaintRestored(partitions=done))
        return st

    @staticmethod
    def _raise_unexpected(replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ActorStopped):
                raise reply  # the crash's reconcile does it again; a stopped actor is given up on elsewhere
