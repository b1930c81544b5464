"""A damaged log is read, never written: the writer's open checks the log's tail and refuses a damaged one.

Each case damages a healthy log the way a bad disk, a bad restore or a hand edit would, then checks that
opening it for writing raises DamagedLogError naming the damage and what to do, that nothing was written, and
that a reader still opens it (that is how one inspects it).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from eventlog_helpers import ThingChanged, ThingCreated, ThingTouched, dump, open_log, raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import ConcurrencyError, CorruptLogError, DamagedLogError
from eventlog import _core as core_module  # the writer's open check (shared by both backends)

pytestmark = pytest.mark.timeout(30)


async def healthy_log(path: Path, things: int = 3, changes: int = 4) -> None:
    """``things`` entities, each created then changed ``changes`` times, interleaved (seq 1, 2, 3, ...)."""
    async with open_log(path) as log:
        for i in range(things):
            await log.append("thing", f"t{i}", 0, ThingCreated(name=f"t{i}"))
        for n in range(1, changes + 1):
            for i in range(things):
                await log.append("thing", f"t{i}", n, ThingChanged(n=n))


def delete_last_row(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)")


def swap_last_two_seqs(db: sqlite3.Connection) -> None:
    last = db.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    db.execute("UPDATE events SET seq = -1 WHERE seq = ?", (last,))
    db.execute("UPDATE events SET seq = ? WHERE seq = ?", (last, last - 1))
    db.execute("UPDATE events SET seq = ? WHERE seq = -1", (last - 1,))


def swap_two_events_of_one_entity(db: sqlite3.Connection) -> None:
    db.execute("UPDATE events SET seq = -1 WHERE seq = 15")
    db.execute("UPDATE events SET seq = 15 WHERE seq = 12")
    db.execute("UPDATE events SET seq = 12 WHERE seq = -1")


def delete_a_middle_row(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM events WHERE seq = 8")


def break_a_prev_link(db: sqlite3.Connection) -> None:
    db.execute("UPDATE events SET prev_seq = 2 WHERE seq = 12")


def unknown_type_key(db: sqlite3.Connection) -> None:
    db.execute("UPDATE events SET type_key = 77 WHERE seq = 14")


def foreign_payload(db: sqlite3.Connection) -> None:
    db.execute("""UPDATE events SET payload = CAST('{"not": "this event"}' AS BLOB) WHERE seq = 13""")


def stale_entity_head(db: sqlite3.Connection) -> None:
    db.execute("UPDATE entities SET last_seq = 11, last_entity_seq = 4 WHERE entity_id = 't2'")


DAMAGE: list[tuple[Callable[[sqlite3.Connection], None], str]] = [
    (delete_last_row, "thing 't2': entities says last seq 15 / entity_seq 5, but its events end at seq 12"),
    (swap_last_two_seqs, "thing 't1': entities says last seq 14 / entity_seq 5, but its events end at seq 15"),
    (swap_two_events_of_one_entity, "seq 12: prev_seq 12 is not before it"),
    (delete_a_middle_row, "seq 11: prev_seq 8 points at an event that is not in the log"),
    (break_a_prev_link, "seq 12: prev_seq 2 points at an event of another entity"),
    (unknown_type_key, "seq 14: event type key 77 is not in the event_types table"),
    (foreign_payload, "seq 13: undecodable payload for ThingChanged v1"),
    (stale_entity_head, "thing 't2': entities says last seq 11 / entity_seq 4, but its events end at seq 15"),
]


@pytest.mark.parametrize(("damage", "expected"), [pytest.param(d, e, id=d.__name__) for d, e in DAMAGE])
async def test_a_damaged_log_is_not_opened_for_writing(
    tmp_path: Path, damage: Callable[[sqlite3.Connection], None], expected: str
) -> None:
    """Opening a damaged log as writer raises DamagedLogError naming the damage and the way out; nothing is
    written; a reader opens it and verify() reports the same damage."""
    path = tmp_path / "log.db"
    await healthy_log(path)
    with raw(path) as db:
        damage(db)
    before = dump(path)
    with pytest.raises(DamagedLogError) as info:
        async with open_log(path, fingerprint="another graph", accept_fingerprint_change=True):
            pass  # pragma: no cover
    message = str(info.value)
    assert expected in message
    assert message.startswith(f"{path}: the log is damaged, so nothing will be written to it: ")
    assert f"check it with `wantbuild replay {path} --verify`" in message
    assert "restore it from a backup" in message
    assert expected in info.value.problems[0]
    assert isinstance(info.value, CorruptLogError)
    assert before == dump(path)
    with raw(path) as db:  # the refused open did not record the new fingerprint either
        assert db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchall() == []
    async with open_log(path, writer=False) as reader:
        report = await reader.verify()
    assert not report.ok


async def test_a_lost_last_event_that_the_tail_cannot_show_is_caught_by_the_high_water_mark(tmp_path: Path) -> None:
    """The last event lost was its entity's first: no event left in the tail belongs to it, so only the
    high-water mark (written by that batch) shows the loss."""
    path = tmp_path / "log.db"
    await healthy_log(path)
    async with open_log(path) as log:
        await log.append("thing", "late", 0, ThingCreated(name="late"))  # seq 16
    with raw(path) as db:
        delete_last_row(db)
    with pytest.raises(DamagedLogError) as info:
        async with open_log(path):
            pass  # pragma: no cover
    lost = "the log's last events are missing: seq 16 was committed, but the last event is seq 15"
    assert info.value.problems == (lost,)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=40),
    lost=st.integers(1, 40),
)
def test_losing_the_last_events_is_always_caught(monkeypatch: pytest.MonkeyPatch,
                                                 steps: list[tuple[int, bool]], lost: int) -> None:
    """Whatever the appends and batches, a log that lost any number of its last events is refused for writing
    (a checked tail of 4 events, so that the high-water mark has work to do); the intact log opens."""
    monkeypatch.setattr(core_module, "TAIL_CHECK", 4)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.db"

        async def write() -> None:
            counts = [0] * 7
            async with open_log(path, autocommit=False) as log:
                pending = []
                for entity, commit_after in steps:
                    pending.append(asyncio.ensure_future(
                        log.append("thing", f"t{entity}", counts[entity], ThingChanged(n=counts[entity]))))
                    counts[entity] += 1
                    await asyncio.sleep(0)
                    if commit_after:
                        await log.commit()
                await log.commit()
                await asyncio.gather(*pending)

        async def open_for_writing() -> None:
            async with open_log(path):
                pass

        asyncio.run(write())
        asyncio.run(open_for_writing())  # intact: opens
        with raw(path) as db:
            db.execute("DELETE FROM events WHERE seq > (SELECT MAX(seq) FROM events) - ?", (lost,))
        with pytest.raises(DamagedLogError):
            asyncio.run(open_for_writing())


async def test_a_healthy_log_opens_and_the_check_reads_only_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage older than the checked tail does not stop the open (the check stays fast); verify() finds it."""
    path = tmp_path / "log.db"
    await healthy_log(path, things=3, changes=10)  # 33 events
    monkeypatch.setattr(core_module, "TAIL_CHECK", 8)
    with raw(path) as db:
        db.execute("""UPDATE events SET payload = CAST('{"not": "this event"}' AS BLOB) WHERE seq = 5""")
    async with open_log(path) as log:
        assert log.last_seq == 33
        report = await log.verify()
    assert [p.seq for p in report.problems] == [5]


async def test_an_entity_whose_last_event_is_missing_is_damage_not_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append that conflicts because its entity's last event is gone (deep in the log, past the checked
    tail) fails with DamagedLogError, not ConcurrencyError's 'reload the entity and retry'; the log then
    refuses every append."""
    path = tmp_path / "log.db"
    await healthy_log(path, things=3, changes=10)
    monkeypatch.setattr(core_module, "TAIL_CHECK", 8)
    async with open_log(path) as log:
        await log.append("thing", "lonely", 0, ThingCreated(name="lonely"))  # seq 34
        await log.append("thing", "lonely", 1, ThingTouched())  # seq 35: its head
        for n in range(11, 21):
            await log.append("thing", "t0", n, ThingChanged(n=n))  # seq 36..45: lonely's head is deep now
    with raw(path) as db:
        db.execute("DELETE FROM events WHERE seq = 35")
    async with open_log(path) as log:  # the damage is older than the checked tail: the open succeeds
        results = await asyncio.gather(
            log.append("thing", "t1", 11, ThingChanged(n=11)),
            log.append("thing", "lonely", 1, ThingChanged(n=1)),  # what a replay of the damaged log expects
            return_exceptions=True,
        )
        assert [DamagedLogError, DamagedLogError] == [type(r) for r in results]
        assert not isinstance(results[1], ConcurrencyError)
        message = str(results[1])
        assert "thing 'lonely': its last event, seq 35, is not in the log" in message
        assert "reload the entity" not in message
        with pytest.raises(DamagedLogError):
            await log.append("thing", "t2", 11, ThingChanged(n=11))
    async with open_log(path, writer=False) as reader:
        assert reader.last_seq == 45  # nothing was written


async def test_a_real_conflict_stays_a_concurrency_error(tmp_path: Path) -> None:
    """A stale expected_entity_seq on a healthy entity is still ConcurrencyError, and the log goes on."""
    path = tmp_path / "log.db"
    await healthy_log(path)
    async with open_log(path) as log:
        with pytest.raises(ConcurrencyError):
            await log.append("thing", "t0", 2, ThingChanged(n=2))
        rec = await log.append("thing", "t0", 5, ThingChanged(n=5))
        assert rec.seq == 16


async def test_a_new_log_and_an_old_log_without_a_high_water_mark_open(tmp_path: Path) -> None:
    """A log written before the high-water mark existed opens as writer, and gets one."""
    path = tmp_path / "log.db"
    await healthy_log(path)
    with raw(path) as db:
        db.execute("DELETE FROM meta WHERE key = 'last_seq'")
    async with open_log(path) as log:
        await log.append("thing", "t0", 5, ThingChanged(n=5))
    with raw(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchall() == [("15",)]
