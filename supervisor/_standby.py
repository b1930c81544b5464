"""The runtime's opening sequence: the log and the World replayed from it, as a serving runtime or a standby.

A runtime opened with ``standby=True`` may wait for the log's writer lease as long as it takes (another runtime
serves the log). It waits *hot*: it replays the log as a reader first and follows the commits of the runtime it
stands by for (LISTEN/NOTIFY on PostgreSQL), so when the lease comes its way (that runtime died, or stalled past
its lease) only the events committed since its last wake-up remain to fold before it recovers and serves. The
World it serves from is the fold of the whole log, as a cold open's would be (I3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from actors import Clock, World, rebuild
from eventlog import Durability, Log, LogNotFoundError, get_logger, open_log

log = get_logger("wantbuild.runtime")


@asynccontextmanager
async def open_log_and_world(given: Log | None, path: str | Path, fingerprint: str, clock: Clock, accept: bool,
                             autocommit: bool, durability: Durability | None, standby: bool,
                             snapshots: bool = True, evicting: bool = False) -> AsyncIterator[tuple[Log, World]]:
    """The writable log at ``path`` (or ``given``) and the World replayed from it (from its newest usable snapshot
    on, unless ``snapshots`` is False; ``evicting``: its settled entities left evicted, for an evicting runtime on
    a log that can read them back)."""
    if given is not None:
        yield given, await rebuild(given, snapshots=snapshots, evicting=evicting and _lazy_ok(given))
        return
    options: dict[str, Any] = {"fingerprint": fingerprint, "accept_fingerprint_change": accept, "now": clock.now,
                               "autocommit": autocommit}
    if durability is not None:  # None: the backend's own default
        options["durability"] = durability
    if not standby:
        async with open_log(path, **options) as elog:
            yield elog, await rebuild(elog, snapshots=snapshots, evicting=evicting and _lazy_ok(elog))
        return
    async with AsyncExitStack() as stack:
        world: World | None = None
        try:
            reader = await stack.enter_async_context(open_log(path, writer=False))
        except LogNotFoundError:  # nobody created the log yet: wait for the lease, then replay as usual
            reader = None
        if reader is not None:
            world = await rebuild(reader, snapshots=snapshots)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_follow, reader, world)
                elog = await stack.enter_async_context(open_log(path, lease_wait=None, **options))
                tg.cancel_scope.cancel()
            await reader.close()  # the writer reads from here on (closing twice is harmless)
            n = 0
            async for rec in elog.read(world.last_seq + 1):  # committed since the follower last woke
                world.apply(rec)
                n += 1
            log.info("standby took the lease", path=elog.path, caught_up=n, last_seq=world.last_seq)
        else:
            elog = await stack.enter_async_context(open_log(path, lease_wait=None, **options))
            world = await rebuild(elog, snapshots=snapshots)
        yield elog, world


def _lazy_ok(elog: Log) -> bool:
    """Whether an evicting runtime on ``elog`` may leave a snapshot's settled entities evicted as it opens: its
    readers can read them back synchronously, and their histories are whole (not compacted)."""
    return hasattr(elog, "histories_now") and not elog.compacted_through


async def _follow(reader: Log, world: World) -> None:
    """Fold what the serving runtime commits into ``world`` while this one waits for the lease."""
    async for rec in reader.follow(world.last_seq + 1):
        world.apply(rec)

