"""Writing a history of Succeeded runs straight through the log API (for benches that need a big log fast)."""

from __future__ import annotations

import asyncio

from actors import JobRunQueued, JobRunStarted, JobRunSucceeded, PartitionBuilding, PartitionLive
from eventlog import Event, EventLog

BATCH = 500


class History:
    """Writes runs to the log: each builds a batch of (ref, inputs) at the partitions' next generations."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.run = 0
        self.gens: dict[str, int] = {}  # ref -> its current generation
        self.eseq: dict[str, int] = {}  # partition -> its entity_seq
        self.pending: list[asyncio.Future[object]] = []
        self.partitions = 0
        self.at = 1_700_000_000.0

    def _append(self, kind: str, eid: str, seq: int, ev: Event) -> None:
        self.pending.append(asyncio.ensure_future(self.log.append(kind, eid, seq, ev, self.at)))

    async def build(self, job: str, items: list[tuple[str, list[str]]]) -> None:
        """One Succeeded run per BATCH items; each output reads its inputs (at their current generation)."""
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            self.run += 1
            rid = f"r-{self.run:08d}"
            refs = tuple(ref for ref, _ in chunk)
            self._append("job_run", rid, 0, JobRunQueued(job=job, partitions=refs))
            gens = []
            for ref in refs:
                seq = self.eseq.get(ref, 0)
                self._append("partition", ref, seq, PartitionBuilding(job_run_id=rid))
                self.eseq[ref] = seq + 1
                gens.append(self.gens.get(ref, 0) + 1)
            self._append("job_run", rid, 1, JobRunStarted(partitions=refs, generations=tuple(gens)))
            read: dict[str, int] = {}
            into: dict[str, list[str]] = {}
            for ref, inputs in chunk:
                for inp in inputs:
                    read[inp] = self.gens[inp]
                    into.setdefault(inp, []).append(ref)
            self._append("job_run", rid, 2, JobRunSucceeded(read=read, into={k: tuple(v) for k, v in into.items()}))
            for ref, gen in zip(refs, gens, strict=True):
                self._append("partition", ref, self.eseq[ref], PartitionLive(job_run_id=rid))
                self.eseq[ref] += 1
                if ref not in self.gens:
                    self.partitions += 1
                self.gens[ref] = gen
            self.at += 1.0
            if len(self.pending) > 50_000:
                await self.flush()

    async def flush(self) -> None:
        await asyncio.sleep(0)  # the append tasks queue their events, then the commit takes them all
        await self.log.commit()
        await asyncio.gather(*self.pending)
        self.pending.clear()
