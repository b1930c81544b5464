"""The runtime's scheduler: turns schedules' ticks into wants, exactly once (issue 16).

One task per runtime. It sleeps on the runtime's clock until the next fire of any active schedule (or until a
schedule is added, paused, resumed or deleted), then, for each active schedule, from its **persisted** state:

1. a recorded tick whose want is missing (a crash came between the two) gets its want now;
2. the ticks due in ``(last tick, now]`` (after a resume: from the resume on; paused time is not caught up) are
   chosen by the schedule's catch-up policy (:func:`~supervisor._schedules.due_ticks`);
3. each chosen tick is recorded (``ScheduleTicked`` with the want's id, derived from the tick), *then* its want is
   created with that id. Creating a want whose id exists is a no-op, and a tick not after the last one is never
   recorded, so a tick yields one want whatever crashes in between. Skipped ticks are recorded as counts.

A template that no longer renders a valid want (the graph changed under a schedule) records the tick as skipped and
logs the error: the schedule goes on with its next tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio

from actors import (
    ChangeSchedule,
    CreateSchedule,
    RecordTick,
    ScheduleCreated,
    ScheduleState,
    ScheduleStatus,
    tick_want_id,
)
from eventlog import WantbuildError, get_logger

from ._schedules import NEVER_AFTER, Schedule, due_ticks, fire_times

if TYPE_CHECKING:
    from ._runtime import Runtime

log = get_logger("wantbuild.schedules")


def schedule_of(st: ScheduleState) -> Schedule:
    """The :class:`Schedule` a committed state describes."""
    spec = st.spec
    return Schedule(name=st.name, cron=spec.cron, want=spec.want, timezone=spec.timezone,
                    catch_up=spec.catch_up, priority=spec.priority,  # type: ignore[arg-type]
                    ttl=spec.ttl, sla=spec.sla, grace=spec.grace, comment=spec.comment)


def created_event(schedule: Schedule, source: str) -> ScheduleCreated:
    return ScheduleCreated(cron=schedule.cron, want=schedule.want, timezone=schedule.timezone,
                           catch_up=schedule.catch_up, priority=schedule.priority, ttl=schedule.ttl,
                           sla=schedule.sla, grace=schedule.grace, comment=schedule.comment, source=source)


class Scheduler:
    """Owned by the runtime: :meth:`run` is its task; :meth:`wake` makes it look again at once."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._woken = anyio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def ensure(self, schedules: Iterable[Schedule], source: str) -> None:
        """Create the schedules the log does not have yet (a graph file's ``[schedule.NAME]``)."""
        for schedule in schedules:
            st = self.rt.world.schedules.get(schedule.name)
            if st is None:
                await self.rt.system.ask("schedule", schedule.name, CreateSchedule(created_event(schedule, source)))
            elif schedule_of(st) != schedule and not st.terminal:
                log.warning("schedule differs from the log's; the log's is kept (delete it to change it)",
                            schedule=schedule.name)

    async def run(self) -> None:
        rt = self.rt
        while not rt.closing:
            self._woken = anyio.Event()
            next_at = await self.tick_all()
            if rt.closing:
                return
            await self._wait(None if next_at is None else max(0.0, next_at - rt.clock.now()))

    async def _wait(self, seconds: float | None) -> None:
        woken = self._woken
        if woken.is_set():
            return
        async with anyio.create_task_group() as tg:
            async def sleeper(delay: float) -> None:
                await self.rt.clock.sleep(delay)
                tg.cancel_scope.cancel()

            async def waker() -> None:
                await woken.wait()
                tg.cancel_scope.cancel()

            if seconds is not None:
                tg.start_soon(sleeper, seconds)
            tg.start_soon(waker)

    async def tick_all(self) -> float | None:
        """Catch every active schedule up to now; the time of the next fire of any of them (None: none)."""
        rt = self.rt
        nxt: float | None = None
        for name in sorted(rt.world.schedules):
            st = rt.world.schedules[name]
            if st.status is not ScheduleStatus.ACTIVE or rt.closing:
                continue
            try:
                await self.catch_up(st)
            except WantbuildError as e:  # a runtime shutting down, a fault drill: the next pass retries
                log.warning("schedule not caught up", schedule=name, error=str(e))
                continue
            st = rt.world.schedules[name]
            now = rt.clock.now()
            after = max(st.last_tick, now)
            upcoming = next(fire_times(st.spec.cron, st.spec.timezone, after, after + NEVER_AFTER), None)
            if upcoming is not None and (nxt is None or upcoming < nxt):
                nxt = upcoming
        return nxt

    async def catch_up(self, st: ScheduleState) -> None:
        rt = self.rt
        schedule = schedule_of(st)
        if st.last_want_id is not None and st.last_want_id not in rt.world.wants:
            await self._want(schedule, st.last_tick, st.last_want_id)  # recorded, not created: a crash in between
        after = max(st.last_tick, st.resumed_at or -math.inf)
        now = rt.clock.now()
        chosen, skipped = due_ticks(schedule, after, now)
        if not chosen and skipped:
            last = None
            for last in fire_times(schedule.cron, schedule.timezone, after, now):  # noqa: B007 - the last one
                pass
            if last is not None:
                await rt.system.ask("schedule", st.name, RecordTick(last, None, skipped - 1))
            return
        for i, tick in enumerate(chosen):
            want_id = tick_want_id(st.name, tick)
            recorded: ScheduleState = await rt.system.ask("schedule", st.name,
                                                         RecordTick(tick, want_id, skipped if i == 0 else 0))
            if recorded.last_want_id != want_id or rt.closing:
                return  # paused, deleted or closing meanwhile
            await self._want(schedule, tick, want_id)

    async def _want(self, schedule: Schedule, tick: float, want_id: str) -> None:
        from ._sets import parse_partition_set

        rt = self.rt
        rendered = schedule.render(tick)
        try:
            parts = parse_partition_set(rt.graph, [rendered])
            await rt.want(parts, want_id=want_id, source=f"schedule:{schedule.name}", priority=schedule.priority,
                          ttl=schedule.ttl, sla=schedule.sla, anchor="data_time", schedule=schedule.name, tick=tick,
                          comment=schedule.comment or f"schedule {schedule.name}: {rendered}")
        except WantbuildError as e:
            if rt.closing:
                raise
            log.error("a schedule's tick created no want", schedule=schedule.name, tick=tick, rendered=rendered,
                      error=str(e))

    # -- changes --------------------------------------------------------------------------------------------
    async def change(self, name: str, how: str, reason: str, command: Any = None) -> Any:
        st = await self.rt.system.ask("schedule", name, ChangeSchedule(how, reason, command))
        self.wake()
        return st
