"""Schedules as pure functions: cron fires, template rendering, catch-up policies, validation."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors import (
    IllegalTransition,
    ScheduleCreated,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleResumed,
    ScheduleState,
    ScheduleTicked,
    apply_schedule,
    tick_want_id,
)
from eventlog import Event
from supervisor import (
    Graph,
    GraphError,
    Schedule,
    ScheduleError,
    check_schedule,
    due_ticks,
    fire_times,
    load_graph,
    render_template,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp()


async def _noop(ctx: Any) -> None:
    return None


def graph() -> Graph:
    g = Graph("sched")
    g.job("daily", outputs="daily/{date}", params={"date": "date"})(_noop)
    g.job("stamp", outputs="stamp/{hour}", params={"hour": "hour"})(_noop)
    return g


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def test_render_yesterday_in_the_schedules_timezone() -> None:
    """{date:yesterday} is the day before the tick's date *in the schedule's timezone*."""
    tick = ts(2026, 11, 2, 0, 30)  # 01:30 in Paris, 19:30 the day before in New York
    assert render_template("daily/{date:yesterday}", tick, "Europe/Paris") == "daily/2026-11-01"
    assert render_template("daily/{date:yesterday}", tick, "America/New_York") == "daily/2026-10-31"
    assert render_template("daily/{date:-7}..{date:yesterday}", tick, "UTC") == "daily/2026-10-26..2026-11-01"
    assert render_template("stamp/{hour:-1}", tick, "UTC") == "stamp/2026-11-01T23"


def test_fires_at_two_in_the_morning_local_time_across_dst() -> None:
    """A 02:30 cron in Paris fires daily; on the spring-forward day (no 02:30) it fires at 03:00."""
    fires = list(fire_times("30 2 * * *", "Europe/Paris", ts(2026, 3, 27), ts(2026, 3, 31)))
    local = [dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(0))).isoformat() for t in fires]
    assert len(fires) == 4, local
    assert fires[2] - fires[1] == 86400 - 1800  # 02:30 CET on the 28th -> 03:00 CEST on the 29th


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["0 2 * * *", "*/15 * * * *", "0 */6 * * 1-5", "5 4 1 * *"]),
       st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata"]),
       st.floats(0, 40 * 86400), st.floats(0, 3 * 86400), st.floats(0, 3 * 86400))
def test_fire_times_split_anywhere_give_the_same_ticks(cron: str, tz: str, start: float, a: float, b: float) -> None:
    """Ticks are increasing, inside (after, until], match the cron, and evaluating in two pieces (a crash in
    between) gives exactly the ticks of one evaluation: none missed, none doubled."""
    after = NOW + start
    mid, until = after + min(a, b), after + max(a, b)
    whole = list(fire_times(cron, tz, after, until))
    assert whole == sorted(set(whole))
    assert all(after < t <= until for t in whole)
    zone = __import__("zoneinfo").ZoneInfo(tz)
    assert all(croniter.match(cron, dt.datetime.fromtimestamp(t, zone)) for t in whole)
    assert list(fire_times(cron, tz, after, mid)) + list(fire_times(cron, tz, mid, until)) == whole


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["all", "latest", "none"]), st.floats(0, 10 * 86400), st.floats(0, 3600))
def test_catch_up_policies(policy: Any, downtime: float, late: float) -> None:
    """all: every due tick; latest: only the last, the others counted as skipped; none: a tick only if on time."""
    sched = Schedule("s", "0 * * * *", "daily/{date}", catch_up=policy, grace=60)
    last = NOW
    now = NOW + downtime + late
    due = list(fire_times(sched.cron, sched.timezone, last, now))
    created, skipped = due_ticks(sched, last, now)
    assert len(created) + skipped == len(due)
    assert set(created) <= set(due)
    if policy == "all":
        assert created == due
    elif due:
        if policy == "latest":
            assert created == [due[-1]]
        else:
            assert created == ([due[-1]] if now - due[-1] <= 60 else [])
    else:
        assert created == []


@pytest.mark.parametrize(("changes", "expected"), [
    pytest.param({"cron": "0 2 30 2 *"}, "never fires", id="never-fires"),
    pytest.param({"cron": "0 25 * * *"}, "is not a cron expression", id="bad-cron"),
    pytest.param({"timezone": "Europe/Pariss"}, "did you mean 'Europe/Paris'", id="unknown-timezone"),
    pytest.param({"want": "dialy/{date:yesterday}"}, "renders 'dialy/", id="no-job"),
    pytest.param({"want": "daily/{date:yesterday}x"}, "is a date", id="malformed-ref"),
    pytest.param({"want": "daily/{day}"}, "unknown placeholder {day}", id="unknown-placeholder"),
    pytest.param({"want": "daily/{date:lastweek}"}, "unknown shift", id="unknown-shift"),
    pytest.param({"catch_up": "some"}, "is not a policy", id="bad-policy"),
    pytest.param({"ttl": -1.0}, "ttl must be", id="bad-ttl"),
    pytest.param({"name": "1 bad"}, "invalid schedule name", id="bad-name"),
])
def test_bad_schedules_are_refused(changes: dict[str, Any], expected: str) -> None:
    """Each bad field is a ScheduleError naming the schedule (or its name) and the fix."""
    fields: dict[str, Any] = {"name": "nightly", "cron": "0 2 * * *", "want": "daily/{date:yesterday}", **changes}
    with pytest.raises(ScheduleError) as err:
        check_schedule(Schedule(**fields), now=NOW, graph=graph())
    assert expected in str(err.value)


def test_schedules_in_the_graph_file(tmp_path: Path) -> None:
    """[schedule.NAME] tables are read and checked with the graph; a bad one names the file and schedule."""
    (tmp_path / "jobs.py").write_text("async def f(ctx):\n    pass\n")
    body = """
        [job.daily]
        outputs = "daily/{date}"
        function = "jobs:f"
        params = { date = "date" }

        [schedule.nightly]
        cron = "0 2 * * *"
        timezone = "Europe/Paris"
        want = "daily/{date:yesterday}"
        catch_up = "latest"
        priority = 10
    """
    (tmp_path / "g.toml").write_text(textwrap.dedent(body))
    g = load_graph(tmp_path / "g.toml")
    assert g.schedules["nightly"] == Schedule("nightly", "0 2 * * *", "daily/{date:yesterday}", "Europe/Paris",
                                              "latest", 10)
    (tmp_path / "g.toml").write_text(textwrap.dedent(body).replace('"0 2 * * *"', '"0 2 31 4 *"'))
    with pytest.raises(GraphError, match=r"g\.toml: schedule 'nightly': the cron '0 2 31 4 \*' never fires"):
        load_graph(tmp_path / "g.toml")
    (tmp_path / "g.toml").write_text(textwrap.dedent(body).replace("catch_up", "catchup"))
    with pytest.raises(GraphError, match="unknown field 'catchup'; did you mean 'catch_up'"):
        load_graph(tmp_path / "g.toml")


def test_pools_in_the_graph_file(tmp_path: Path) -> None:
    """[pools] declares pool sizes; a job naming an undeclared pool is refused with the fix."""
    (tmp_path / "jobs.py").write_text("async def f(ctx):\n    pass\n")
    body = """
        [pools]
        warehouse = 4

        [job.a]
        outputs = "a/{x}"
        function = "jobs:f"
        pool = "warehouse"
    """
    (tmp_path / "g.toml").write_text(textwrap.dedent(body))
    g = load_graph(tmp_path / "g.toml")
    assert (g.pools, g["a"].pool) == ({"warehouse": 4}, "warehouse")
    (tmp_path / "g.toml").write_text(textwrap.dedent(body).replace("warehouse = 4", "warehous = 4"))
    with pytest.raises(GraphError, match=r"pool 'warehouse' is not declared; did you mean 'warehous'"):
        load_graph(tmp_path / "g.toml")
    (tmp_path / "g.toml").write_text(textwrap.dedent(body).replace("warehouse = 4", "warehouse = 0"))
    with pytest.raises(GraphError, match=r"\[pools\]: pool 'warehouse': its size must be an int >= 1"):
        load_graph(tmp_path / "g.toml")


# -- the Schedule entity's state machine --------------------------------------------------------------------



class ScheduleMachine(RuleBasedStateMachine):
    """The pure transition function against a plain model: status, last tick, counts; illegal events refused."""

    def __init__(self) -> None:
        super().__init__()
        self.state: ScheduleState | None = None
        self.events: list[tuple[Event, float]] = []
        self.model: dict[str, Any] = {}
        self.now = 0.0

    def _apply(self, ev: Event) -> None:
        self.now += 1
        seq = 1 if self.state is None else self.state.entity_seq + 1
        self.state = apply_schedule(self.state, ev, "s", self.now, seq)
        self.events.append((ev, self.now))

    def _refused(self, ev: Event) -> None:
        with pytest.raises(IllegalTransition):
            apply_schedule(self.state, ev, "s", self.now, 99)

    @precondition(lambda self: self.state is None)
    @rule()
    def create(self) -> None:
        self._apply(ScheduleCreated(cron="0 * * * *", want="daily/{date}"))
        self.model = {"status": "Active", "last": self.now, "ticks": 0, "skipped": 0}

    @precondition(lambda self: self.state is not None)
    @rule(ahead=st.floats(-5, 5), skipped=st.integers(0, 3), make_want=st.booleans())
    def tick(self, ahead: float, skipped: int, make_want: bool) -> None:
        tick = self.model["last"] + ahead
        ev = ScheduleTicked(tick=tick, want_id=tick_want_id("s", tick) if make_want else None, skipped=skipped)
        if self.model["status"] != "Active" or tick <= self.model["last"]:
            self._refused(ev)
            return
        self._apply(ev)
        self.model["last"] = tick
        self.model["ticks"] += make_want
        self.model["skipped"] += skipped + (not make_want)

    @precondition(lambda self: self.state is not None)
    @rule(how=st.sampled_from(["pause", "resume", "delete"]))
    def change(self, how: str) -> None:
        ev: Event = {"pause": SchedulePaused(), "resume": ScheduleResumed(), "delete": ScheduleDeleted()}[how]
        allowed = {"pause": ("Active",), "resume": ("Paused",), "delete": ("Active", "Paused")}[how]
        if self.model["status"] not in allowed:
            self._refused(ev)
            return
        self._apply(ev)
        self.model["status"] = {"pause": "Paused", "resume": "Active", "delete": "Deleted"}[how]

    @precondition(lambda self: self.state is None)
    @rule()
    def tick_before_creation_is_refused(self) -> None:
        self._refused(ScheduleTicked(tick=1.0))

    @invariant()
    def matches_the_model_and_replays(self) -> None:
        if self.state is None:
            return
        st_ = self.state
        assert (str(st_.status), st_.last_tick, st_.ticks, st_.skipped) == (
            self.model["status"], self.model["last"], self.model["ticks"], self.model["skipped"])
        folded: ScheduleState | None = None
        for i, (ev, at) in enumerate(self.events, start=1):
            folded = apply_schedule(folded, ev, "s", at, i)
        assert folded == st_


TestScheduleMachine = ScheduleMachine.TestCase
TestScheduleMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_tick_want_ids_are_unique_per_tick() -> None:
    """Two ticks of a schedule, down to the millisecond, get two want ids; the same tick always the same."""
    assert tick_want_id("n", 3600.0) == tick_want_id("n", 3600.0) == "w-s-n-19700101T010000"
    assert tick_want_id("n", 3600.5) != tick_want_id("n", 3600.0)
