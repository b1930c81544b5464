"""Schedules: recurring wants (``daily/{date:yesterday}`` every morning at 02:00), as pure functions.

A :class:`Schedule` has a cron expression (read by ``croniter``: five fields, or six with seconds), an IANA
timezone the cron is read in (``Europe/Paris``; default ``UTC``), and a **want template**: a partition spec
with time placeholders, rendered at each tick in the schedule's timezone:

``{date}``              the tick's date, ``YYYY-MM-DD``; ``{date:yesterday}``, ``{date:today}``, ``{date:-7}``,
                        ``{date:+1}`` shift it by days
``{hour}``              the tick's hour, ``YYYY-MM-DDTHH``; ``{hour:-1}`` shifts it by hours

A rendered template may be a range (``daily/{date:-7}..{date:yesterday}``): it is read like ``want create``'s
arguments (``supervisor.parse_partition_set``).

**Ticks.** The ticks of a schedule are the cron's fire instants after the schedule was created. When the runtime
looks at a schedule at ``now`` (on time, or after downtime), the ticks in ``(last tick, now]`` are due, and the
schedule's **catch-up policy** says which of them get a want (:func:`due_ticks`):

``all``     every due tick (default: each tick names different data, and a missed day is a hole in it)
``latest``  only the most recent due tick; older ones are skipped
``none``    only a tick that is on time (at most ``grace`` seconds old, 60 by default); missed ones are skipped

Everything here is pure (no clock, no I/O), so the tick arithmetic is tested by properties; the runtime records
ticks as events (``ScheduleTicked``) and creates each tick's want exactly once.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias, get_args

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from eventlog._errors import WantbuildError

from ._hints import did_you_mean, valid_choices

__all__ = [
    "CATCH_UP",
    "CatchUp",
    "Schedule",
    "ScheduleError",
    "check_schedule",
    "due_ticks",
    "fire_times",
    "render_template",
]

CatchUp: TypeAlias = Literal["all", "latest", "none"]
CATCH_UP: Final[tuple[CatchUp, ...]] = get_args(CatchUp)
DEFAULT_GRACE: Final[float] = 60.0
"""Seconds a tick may be late and still count as on time (catch-up ``none``)."""
NEVER_AFTER: Final[float] = 10 * 366 * 86400.0
"""A cron that does not fire within ten years of its start is refused as never firing."""

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
_TOKEN_RE = re.compile(r"\{([^{}]*)\}")
_SHIFT_RE = re.compile(r"[+-]\d{1,6}")


class ScheduleError(WantbuildError, ValueError):
    """A schedule that cannot be used (a cron that never fires, an unknown timezone, a template that renders a
    malformed ref...). The message names the schedule, the field and the fix."""


@dataclass(frozen=True)
class Schedule:
    """A recurring want: ``want`` (a template) rendered at every fire of ``cron`` in ``timezone``."""

    name: str
    cron: str
    want: str
    timezone: str = "UTC"
    catch_up: CatchUp = "all"
    priority: int = 0
    ttl: float | None = None
    sla: float | None = None
    grace: float = DEFAULT_GRACE
    comment: str = ""

    def fires(self, after: float, until: float) -> Iterator[float]:
        return fire_times(self.cron, self.timezone, after, until)

    def render(self, tick: float) -> str:
        return render_template(self.want, tick, self.timezone)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def fire_times(cron: str, timezone: str, after: float, until: float) -> Iterator[float]:
    """The instants (epoch seconds) in ``(after, until]`` at which ``cron`` fires, read in ``timezone``."""
    if until <= after:
        return
    start = dt.datetime.fromtimestamp(after, _zone(timezone))
    it = croniter(cron, start)
    while True:
        try:
            t = float(it.get_next(float))
        except CroniterBadDateError:
            return
        if t <= after:  # croniter works in whole seconds: never yield the start itself
            continue
        if t > until:
            return
        yield t


def due_ticks(schedule: Schedule, last: float, now: float, *, limit: int = 100_000) -> tuple[list[float], int]:
    """``(ticks to create a want for, how many due ticks are skipped)`` for ticks in ``(last, now]``.

    ``last``: the last tick recorded (or the schedule's creation time before its first tick). At most ``limit``
    ticks are returned (the rest stay due, for the next call); skipped ticks are counted, never returned.
    """
    policy = schedule.catch_up
    if policy == "all":
        out: list[float] = []
        for t in schedule.fires(last, now):
            out.append(t)
            if len(out) >= limit:
                break
        return out, 0
    # latest / none: walk all due ticks (cheap: only their count and the last are kept)
    count = 0
    latest: float | None = None
    for t in schedule.fires(last, now):
        count += 1
        latest = t
    if latest is None:
        return [], 0
    if policy == "latest" or now - latest <= schedule.grace:
        return [latest], count - 1
    return [], count


def render_template(template: str, tick: float, timezone: str) -> str:
    """The partition spec ``template`` names at ``tick`` (epoch seconds) in ``timezone``.

    Raises :class:`ScheduleError` for an unknown placeholder or shift.
    """
    local = dt.datetime.fromtimestamp(tick, _zone(timezone))

    def one(m: re.Match[str]) -> str:
        token = m.group(1)
        name, _, shift = token.partition(":")
        if name == "date":
            days = {"": 0, "today": 0, "yesterday": -1, "tomorrow": 1}.get(shift)
            if days is None and _SHIFT_RE.fullmatch(shift):
                days = int(shift)
            if days is None:
                raise ScheduleError(f"template {template!r}: {{{token}}} has an unknown shift {shift!r}; use "
                                    f"{{date}}, {{date:yesterday}}, {{date:today}} or a number of days like "
                                    f"{{date:-7}}")
            return (local.date() + dt.timedelta(days=days)).isoformat()
        if name == "hour":
            hours = 0 if not shift else int(shift) if _SHIFT_RE.fullmatch(shift) else None
            if hours is None:
                raise ScheduleError(f"template {template!r}: {{{token}}} has an unknown shift {shift!r}; use "
                                    f"{{hour}} or a number of hours like {{hour:-1}}")
            # Shift in absolute time, then read it in the timezone (a DST change moves the wall clock).
            at = dt.datetime.fromtimestamp(tick + hours * 3600, _zone(timezone))
            return f"{at.date().isoformat()}T{at.hour:02d}"
        raise ScheduleError(f"template {template!r}: unknown placeholder {{{token}}}; "
                            f"{valid_choices(name, ('date', 'hour'))} (e.g. daily/{{date:yesterday}})")

    return _TOKEN_RE.sub(one, template)


_FIELDS = ("cron", "want", "timezone", "catch_up", "priority", "ttl", "sla", "grace", "comment")


def check_schedule(schedule: Schedule, *, now: float, graph: object | None = None) -> Schedule:
    """Check every field; with ``graph``, also that the template renders a valid spec of the graph's jobs.

    Returns the schedule; raises :class:`ScheduleError` naming the schedule, the field and the fix. ``now``
    (epoch seconds) is where the never-fires check and the sample rendering start.
    """
    where = f"schedule {schedule.name!r}"
    if not isinstance(schedule.name, str) or not _NAME_RE.fullmatch(schedule.name):
        raise ScheduleError(f"invalid schedule name {schedule.name!r}: 1-128 characters, a letter or '_' first, "
                            f"then letters, digits, '_', '.' or '-'")
    if not isinstance(schedule.timezone, str) or not schedule.timezone:
        raise ScheduleError(f"{where}: timezone must be an IANA name such as 'UTC' or 'Europe/Paris'")
    try:
        _zone(schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        hint = did_you_mean(schedule.timezone, sorted(zoneinfo.available_timezones()))
        raise ScheduleError(f"{where}: unknown timezone {schedule.timezone!r}; {hint + ' ' if hint else ''}use an "
                            f"IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'") from None
    cron = schedule.cron
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ScheduleError(f"{where}: {cron!r} is not a cron expression; write five fields, minute hour "
                            f"day-of-month month day-of-week (e.g. '0 2 * * *' for 02:00 every day)")
    try:
        first = next(fire_times(cron, schedule.timezone, now, now + NEVER_AFTER), None)
    except (CroniterBadCronError, CroniterError) as e:
        raise ScheduleError(f"{where}: {cron!r} cannot be read: {e}") from None
    if first is None:
        raise ScheduleError(f"{where}: the cron {cron!r} never fires (no fire in the next ten years, e.g. a day "
                            f"that does not exist such as February 30); fix the day and month fields")
    if schedule.catch_up not in CATCH_UP:
        raise ScheduleError(f"{where}: catch_up {schedule.catch_up!r} is not a policy; "
                            f"{valid_choices(str(schedule.catch_up), CATCH_UP)}")
    if not isinstance(schedule.priority, int) or isinstance(schedule.priority, bool):
        raise ScheduleError(f"{where}: priority must be an integer (higher is served first), got "
                            f"{schedule.priority!r}")
    for what, value in (("ttl", schedule.ttl), ("sla", schedule.sla)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                  or not math.isfinite(value) or value <= 0):
            raise ScheduleError(f"{where}: {what} must be a number of seconds > 0, got {value!r}")
    if not isinstance(schedule.grace, int | float) or schedule.grace < 0:
        raise ScheduleError(f"{where}: grace must be a number of seconds >= 0, got {schedule.grace!r}")
    if not isinstance(schedule.want, str) or not schedule.want:
        raise ScheduleError(f"{where}: want must be a template such as 'daily/{{date:yesterday}}'")
    try:
        rendered = schedule.render(first)
    except ScheduleError as e:
        raise ScheduleError(f"{where}: {e}") from None
    if graph is not None:
        from ._graph import Graph
        from ._sets import parse_partition_set

        assert isinstance(graph, Graph)
        try:
            parse_partition_set(graph, [rendered])
        except WantbuildError as e:
            raise ScheduleError(f"{where}: its template {schedule.want!r} renders {rendered!r} (at its next tick), "
                                f"which is not a valid want: {e}") from None
    return schedule


def schedule_from_table(name: str, table: dict[str, object], *, where: str) -> Schedule:
    """A :class:`Schedule` from a graph file's ``[schedule.NAME]`` table (types checked here, values later)."""
    for key in table:
        if key not in _FIELDS:
            raise ScheduleError(f"{where}: unknown field {key!r}; {valid_choices(key, _FIELDS)}")
    for key in ("cron", "want"):
        if key not in table:
            example = "'0 2 * * *'" if key == "cron" else "\"daily/{date:yesterday}\""
            raise ScheduleError(f"{where}: missing field {key!r}; add e.g. {key} = {example}")
    kwargs: dict[str, object] = {}
    for key in ("cron", "want", "timezone", "catch_up", "comment"):
        if key in table:
            if not isinstance(table[key], str):
                raise ScheduleError(f"{where}: field {key!r} must be a string, got {table[key]!r}")
            kwargs[key] = table[key]
    for key in ("priority",):
        if key in table:
            kwargs[key] = table[key]
    for key in ("ttl", "sla", "grace"):
        if key in table:
            value = table[key]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ScheduleError(f"{where}: field {key!r} must be a number of seconds, got {value!r}")
            kwargs[key] = float(value)
    return replace(Schedule(name=name, cron="", want=""), **kwargs)  # type: ignore[arg-type]
