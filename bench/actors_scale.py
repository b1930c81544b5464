"""1,000,000 partition actors driven Missing -> Building -> Live, every transition durable (issue: Actors).

Each partition is the runtime's own ``PartitionActor`` on the actor kernel: its lease request and its build
outcome are asks, each transition is appended to the event log on disk and committed before the reply
(write-ahead). Partitions are driven by ``--drivers`` concurrent runs of ``--wave`` partitions each, as a JobRun
drives them: one ask to the whole wave (``ctx.ask_many``), its replies, then the next step. Memory follows the
active waves, not the million: an idle actor's cell is dropped at once (the World keeps each partition's
committed state, a compact record, as the runtime does).

Baseline in the same run: a bare asyncio.Queue ping-pong (request queue + reply future, a task per server), the
same number of request/reply messages; its median of five runs (three before, two after).
ratio = actor messages/s / baseline messages/s.
Usage: python bench/actors_scale.py [--entities 1000000] [--wave 250] [--drivers 1] [--default-gc] [--split]
(--split adds a diagnostic line: the same drive with commits resolved in memory, never the headline.)
Last line: ratio=... peak_rss_mb=... entities=...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory_commits import MemoryCommits  # bench/, the script's own folder

from actors import (
    Behavior,
    Ctx,
    Kernel,
    LeaseReply,
    PartitionActor,
    RequestLease,
    SettleBuild,
    SystemClock,
    World,
    replies_ok,
)
from eventlog import EventLog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
DRIVERS = 1


class Go:
    """To a driver: drive waves ``first, first + drivers, ...`` of the partitions, then resolve ``done``."""

    def __init__(self, first: int, n: int, wave: int, done: asyncio.Future[int]) -> None:
        self.first, self.n, self.wave, self.done = first, n, wave, done


class Driver(Behavior):
    """Leases a wave of partitions (one ask to all of them), settles them Live, then the next wave."""

    def __init__(self) -> None:
        self.go: Go | None = None
        self.start = 0
        self.messages = 0

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        assert isinstance(msg, Go)
        self.go = msg
        self.start = msg.first * msg.wave
        return self._lease(ctx, None)

    def _refs(self) -> tuple[str, list[str]]:
        go = self.go
        assert go is not None
        return f"r-{self.start // go.wave:08d}", [f"daily/{i:07d}" for i in range(self.start, min(go.n, self.start
                                                                                                   + go.wave))]

    def _lease(self, ctx: Ctx, _: Any) -> Any:
        go = self.go
        assert go is not None
        if self.start >= go.n:
            go.done.set_result(self.messages)
            return None
        run, refs = self._refs()
        ctx.ask_many("partition", [(r, RequestLease(run)) for r in refs], self._leased)
        return None

    def _leased(self, ctx: Ctx, replies: list[Any]) -> Any:
        assert all(cast(LeaseReply, rep).granted for rep in replies_ok(replies))
        run, refs = self._refs()
        ctx.ask_many("partition", [(r, SettleBuild(run, "live")) for r in refs], self._settled)
        return None

    def _settled(self, ctx: Ctx, replies: list[Any]) -> Any:
        replies_ok(replies)
        go = self.go
        assert go is not None
        self.messages += 2 * len(replies)
        self.start += go.wave * DRIVERS
        return self._lease(ctx, None)


async def drive(n: int, wave: int, durable: bool = True) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as d:
        async with contextlib.AsyncExitStack() as stack:
            log = await stack.enter_async_context(EventLog.open(Path(d) / "scale.db")) if durable else MemoryCommits()
            world = World()
            async with Kernel(cast(EventLog, log), world, SystemClock()) as kernel:
                kernel.register("partition", lambda _key: PartitionActor())  # as the runtime does
                kernel.register("driver", lambda _key: Driver(), entity=False, keep=True)
                loop = asyncio.get_running_loop()
                t0 = time.perf_counter()
                dones = []
                for k in range(DRIVERS):
                    fut: asyncio.Future[int] = loop.create_future()
                    dones.append(fut)
                    kernel.tell("driver", str(k), Go(k, n, wave, fut))
                messages = sum(await asyncio.gather(*dones))
                dt = time.perf_counter() - t0
                live = sum(1 for p in world.partitions.values() if p.status == "Live")
                assert live == n, live
                assert kernel.active_count("partition") == 0, "every idle actor's cell was dropped"
                return messages / dt, log.last_seq


async def baseline(n_messages: int, pairs: int = 1000) -> float:
    """Request/reply over bare asyncio queues: ``pairs`` servers, each with its own queue."""
    loop = asyncio.get_running_loop()
    queues: list[asyncio.Queue[tuple[int, asyncio.Future[int]] | None]] = [asyncio.Queue() for _ in range(pairs)]

    async def server(q: asyncio.Queue[tuple[int, asyncio.Future[int]] | None]) -> None:
        while (item := await q.get()) is not None:
            item[1].set_result(item[0] + 1)

    servers = [asyncio.ensure_future(server(q)) for q in queues]
    per = n_messages // pairs

    async def client(q: asyncio.Queue[tuple[int, asyncio.Future[int]] | None]) -> None:
        for i in range(per):
            fut: asyncio.Future[int] = loop.create_future()
            q.put_nowait((i, fut))
            await fut

    t0 = time.perf_counter()
    await asyncio.gather(*(client(q) for q in queues))
    dt = time.perf_counter() - t0
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*servers)
    return per * pairs / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--wave", type=int, default=250, help="partitions per run (one ask to all of them per step)")
    ap.add_argument("--drivers", type=int, default=1, help="runs leasing and settling concurrently")
    ap.add_argument("--split", action="store_true",
                    help="also run the actor layer with commits resolved in memory, to split the cost (diagnostic)")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep Python's GC thresholds (default: the runtime's tune_gc policy, for both sides)")
    a = ap.parse_args()
    if not a.default_gc:
        # What open_runtime(tune_gc=True) does (supervisor/_runtime.py, _gc_policy), as `wantbuild run` runs:
        # the young generation is collected every 1,000,000 allocations, not 700, and what exists now is frozen.
        # Applied before the baseline too, so both sides run under the same collector settings.
        gc.freeze()
        gc.set_threshold(1_000_000, 20, 100)
    print(f"gc: {'Python defaults' if a.default_gc else 'tuned as the runtime tunes it (tune_gc=True)'}")
    global DRIVERS
    DRIVERS = a.drivers
    # The baseline is short and this machine noisy: its median over five runs, around the measured one.
    bases = [asyncio.run(baseline(min(2 * a.entities, 400_000))) for _ in range(3)]
    rate, events = asyncio.run(drive(a.entities, a.wave))
    bases += [asyncio.run(baseline(min(2 * a.entities, 400_000))) for _ in range(2)]
    base = statistics.median(bases)
    if a.split:
        n_split = min(a.entities, 200_000)
        mem_rate, _ = asyncio.run(drive(n_split, a.wave, durable=False))
        print(f"split ({n_split:,} partitions): the actor layer alone, commits resolved in memory (not durable): "
              f"{mem_rate:,.0f} messages/s = {mem_rate / base:.3f} of the baseline; per message "
              f"{1e6 / mem_rate:.1f} us in the actor layer + {1e6 / rate - 1e6 / mem_rate:.1f} us for the durable "
              f"commit")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.entities:,} partitions, {events:,} events committed; actor messages {rate:,.0f}/s; "
          f"bare asyncio queue ping-pong {base:,.0f}/s")
    print(f"ratio={rate / base:.3f} peak_rss_mb={rss:.0f} entities={a.entities}")


if __name__ == "__main__":
    main()
