"""Snapshots of the World (issue 15): stored in the log's database, loaded by restart, skipped when damaged.

The storage tests run against SQLite and PostgreSQL (``log_target``); the World and runtime tests on SQLite, with
one runtime restart on PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from structlog.typing import EventDict

import wantbuild
from actors import (
    SNAPSHOT_FORMAT,
    JobRunQueued,
    JobRunResultIgnored,
    JobRunStarted,
    JobRunSucceeded,
    PartitionBuilding,
    PartitionLive,
    PartitionSet,
    PartitionTainted,
    ReplayError,
    ScheduleCreated,
    WantBuilding,
    WantCreated,
    WantSucceeded,
    World,
    check_log,
    compact,
    decode_world,
    encode_world,
    fold,
    rebuild,
    verify_snapshots,
)
from eventlog import (
    EventLog,
    EventLogError,
    Log,
    PostgresEventLog,
    ReadOnlyLogError,
    Record,
    SnapshotError,
    open_log,
)
from eventlog._core import SNAPSHOT_PIECE
from supervisor import parse_partition_set
from wantbuild._cli import cli

pytestmark = pytest.mark.timeout(60)


async def corrupt_piece(log: Log, seq: int) -> None:
    """Flip bytes of a stored snapshot's first piece (what a bad disk or a stray write does)."""
    if isinstance(log, PostgresEventLog):
        await log._fetch(f"UPDATE {log._quoted}.snapshot_pieces SET data = overlay(data placing '\\xdeadbeef'::bytea "
                         "from 20) WHERE seq = $1 AND piece = 0", seq)
        return
    assert isinstance(log, EventLog)
    db = sqlite3.connect(log.path)
    try:
        (data,) = db.execute("SELECT data FROM snapshot_pieces WHERE seq = ? AND piece = 0", (seq,)).fetchone()
        data = data[:19] + bytes(b ^ 0xFF for b in data[19:23]) + data[23:]
        with db:
            db.execute("UPDATE snapshot_pieces SET data = ? WHERE seq = ? AND piece = 0", (data, seq))
    finally:
        db.close()


async def fill(log: Log, n: int) -> list[Record]:
    """``n`` partitions built by one run each: five events per partition."""
    recs: list[Record] = []
    for i in range(n):
        recs.extend(await fill_one(log, str(i)))
    return recs


async def fill_one(log: Log, name: str) -> list[Record]:
    """Partition ``daily/<name>`` built by run ``r-<name>``: five events."""
    ref, run = f"daily/{name}", f"r-{name}"
    return [await log.append("job_run", run, 0, JobRunQueued(job="daily", partitions=(ref,))),
            await log.append("partition", ref, 0, PartitionBuilding(job_run_id=run)),
            await log.append("job_run", run, 1, JobRunStarted(partitions=(ref,), generations=(1,))),
            await log.append("job_run", run, 2, JobRunSucceeded()),
            await log.append("partition", ref, 1, PartitionLive(job_run_id=run))]


# -- storage (both backends) ------------------------------------------------------------------------------------
async def test_snapshot_round_trip_newest_first(log_target: str) -> None:
    """A snapshot written in parts reads back as their concatenation; listed newest first; readers see it."""
    async with open_log(log_target) as log:
        await fill(log, 3)
        first = await log.write_snapshot(5, 1.0, "x/1", b"abc" * 1000)
        second = await log.write_snapshot(15, 2.0, "x/1", [b"head", b"-" * 3_000_000, b"tail"])
        assert [s.seq for s in await log.snapshots()] == [15, 5]
        assert (second.size, second.format, second.at) == (3_000_008, "x/1", 2.0)
        assert second.stored < second.size  # compressed
        assert await log.read_snapshot(second) == b"head" + b"-" * 3_000_000 + b"tail"
    async with open_log(log_target, writer=False) as reader:
        assert [second, first] == await reader.snapshots()
        assert await reader.read_snapshot(first) == b"abc" * 1000
        with pytest.raises(ReadOnlyLogError):
            await reader.write_snapshot(5, 1.0, "x/1", b"no")
    async with open_log(log_target) as log:
        await log.delete_snapshots([15])
        assert [s.seq for s in await log.snapshots()] == [5]


async def test_snapshot_of_uncommitted_seq_refused(log_target: str) -> None:
    """A snapshot must cover committed events: a seq past the log's end is refused, naming it."""
    async with open_log(log_target) as log:
        await fill(log, 1)
        with pytest.raises(EventLogError, match="seq 6 is not committed"):
            await log.write_snapshot(6, 1.0, "x/1", b"no")
        assert await log.snapshots() == []


async def test_damaged_snapshot_fails_its_checksum(log_target: str) -> None:
    """Bytes changed in storage are found on read: SnapshotError names the snapshot's seq."""
    async with open_log(log_target) as log:
        await fill(log, 1)
        info = await log.write_snapshot(5, 1.0, "x/1", bytes(range(256)) * 400)
        await corrupt_piece(log, 5)
        with pytest.raises(SnapshotError, match="seq 5") as err:
            await log.read_snapshot(info)
        assert err.value.seq == 5


async def test_unfinished_snapshot_is_invisible(log_target: str) -> None:
    """A snapshot whose writer died after some pieces (no head row yet) is not listed; a later snapshot at the same
    seq with fewer pieces is read back whole, without the dead attempt's extra pieces."""
    async with open_log(log_target) as log:
        await fill(log, 1)
        for i in range(3):
            await log._db_snapshot_piece(5, i, b"half")  # type: ignore[attr-defined]
        assert await log.snapshots() == []
        info = await log.write_snapshot(5, 1.0, "x/1", b"whole")
        assert await log.read_snapshot(info) == b"whole"


# -- the World's encoding ---------------------------------------------------------------------------------------
async def _noop(ctx: Any) -> None:
    return None


def every_kind_world() -> World:
    """A World holding every kind: a list want, a range want, runs with handles, partitions, a schedule."""
    recs = []
    seq = 0

    def add(kind: str, eid: str, eseq: int, ev: Any) -> None:
        nonlocal seq
        seq += 1
        recs.append(Record(seq, kind, eid, eseq, ev, 100.0 + seq))

    add("want", "w1", 1, WantCreated(refs=("daily/1", "daily/2"), comment="list"))
    g = wantbuild.Graph("sets")
    g.job("day", outputs="day/{date}", params={"date": "date"})(_noop)
    parts = parse_partition_set(g, ["day/2026-01-01..2026-12-31"])
    add("want", "w2", 1, WantCreated(refs=(), parts=parts.to_json()))
    add("job_run", "r1", 1, JobRunQueued(job="daily", partitions=("daily/1",), wants=("w1",)))
    add("partition", "daily/1", 1, PartitionBuilding(job_run_id="r1"))
    add("job_run", "r1", 2, JobRunStarted(partitions=("daily/1",), generations=(1,), executor="dask",
                                          handle={"key": "k", "n": 1}))
    add("job_run", "r1", 3, JobRunSucceeded())
    add("partition", "daily/1", 2, PartitionLive(job_run_id="r1"))
    add("partition", "daily/1", 3, PartitionTainted(reason="late"))
    add("schedule", "nightly", 1, ScheduleCreated(cron="0 2 * * *", want="daily/{date}"))
    return fold(recs)


@pytest.mark.parametrize("thread_batches", [False, True], ids=["inline-batches", "thread-batches"])
async def test_snapshot_writes_take_turns_with_batches(tmp_path: Path, thread_batches: bool) -> None:
    """Snapshot pieces, their deletion and a drop of events share the writer's SQLite connection with the batches
    and never overlap one: appends from several tasks all commit meanwhile, and the log and snapshots check out."""
    path = str(tmp_path / "s.db")
    data = os.urandom(3 * SNAPSHOT_PIECE + 17)  # incompressible: four pieces, four transactions
    async with open_log(path) as log:
        assert isinstance(log, EventLog)
        if thread_batches:
            log._inline_rows = 0  # every batch on the connection's thread
        await fill(log, 1)

        async def appends(w: int) -> None:
            for i in range(30):
                await fill_one(log, f"{w}-{i}")

        async with anyio.create_task_group() as tg:
            for w in range(4):
                tg.start_soon(appends, w)
            for seq in (1, 2, 3, 4):
                await log.write_snapshot(seq, 0.0, "x/1", data)
                await anyio.lowlevel.checkpoint()
            await log.delete_snapshots([1, 2])
            assert await log.drop_events([("job_run", "r-0")], 5) == 3
        assert log.last_seq == 5 + 4 * 30 * 5
        assert list((await log.verify()).problems) == []
        assert [s.seq for s in await log.snapshots()] == [4, 3]
        for info in await log.snapshots():
            assert await log.read_snapshot(info) == data


def test_world_encodes_and_decodes_equal() -> None:
    """A World's snapshot decodes to an equal World (states, last seq and time), range wants included."""
    world = every_kind_world()
    back = decode_world(encode_world(world))
    assert world.diff(back) == []
    assert world == back
    assert (world.last_seq, world.last_at) == (back.last_seq, back.last_at)
    assert type(back.wants["w1"].refs) is tuple
    assert isinstance(back.wants["w2"].refs, PartitionSet)
    assert len(back.wants["w2"].refs) == 365


def test_lazy_load_leaves_settled_entities_evicted() -> None:
    """A lazy load (an evicting runtime's restart) decodes only what is in flight: the settled wants, runs and Live
    partitions are left evicted yet counted, the id counters' hints name the highest evicted ids, and the lineage
    index is the full load's."""
    world = every_kind_world()
    seq = world.last_seq
    for i, (kind, eid, eseq, ev) in enumerate([
            ("want", "w-00000007", 1, WantCreated(refs=("daily/2",))), ("want", "w-00000007", 2, WantBuilding()),
            ("job_run", "r-00000009", 1, JobRunQueued(job="daily", partitions=("daily/2",), wants=("w-00000007",))),
            ("partition", "daily/2", 1, PartitionBuilding(job_run_id="r-00000009")),
            ("job_run", "r-00000009", 2, JobRunStarted(partitions=("daily/2",), generations=(1,))),
            ("job_run", "r-00000009", 3, JobRunSucceeded(read={"daily/1": 1})),
            ("partition", "daily/2", 2, PartitionLive(job_run_id="r-00000009")),
            ("want", "w-00000007", 3, WantSucceeded())]):
        world.apply(Record(seq + i + 1, kind, eid, eseq, ev, 200.0 + i))
    data = encode_world(world)
    full, lazy = decode_world(data), decode_world(data, lazy=True)
    assert full == world
    assert lazy.counts() == full.counts()
    assert sorted(dict(lazy.runs)) == []  # both runs Succeeded: left evicted
    assert sorted(dict(lazy.partitions)) == ["daily/1"]  # Tainted: in flight
    assert sorted(dict(lazy.wants)) == ["w1", "w2"]  # active
    assert all(lazy.is_evicted(k, e) for k, e in [("job_run", "r1"), ("partition", "daily/2"), ("want", "w-00000007")])
    assert lazy.id_hints["job_run"] == ["r-00000009"]  # ("r1" is not numbered as the runtime numbers runs)
    assert lazy.id_hints["want"] == ["w-00000007"]
    assert list(lazy.lineage.runs) == list(full.lineage.runs) == list(world.lineage.runs) == ["r1", "r-00000009"]
    assert lazy.lineage.builders == world.lineage.builders
    assert lazy.lineage.readers == world.lineage.readers
    kept = decode_world(data, lazy=True, keep={"partition": {"daily/2"}, "job_run": {"r1"}})  # the tail moves them
    assert sorted(dict(kept.partitions)) == ["daily/1", "daily/2"]
    assert sorted(dict(kept.runs)) == ["r1"]
    assert kept.is_evicted("job_run", "r-00000009")
    assert kept.counts() == full.counts()
    assert kept.partitions["daily/2"] == world.partitions["daily/2"]


def test_snapshot_of_another_format_is_not_misread() -> None:
    """Bytes of another format (an older wantbuild's states) are refused, not decoded with today's defaults."""
    data = bytearray(encode_world(every_kind_world()))
    data[data.index(SNAPSHOT_FORMAT.encode())+len("wantbuild-world/")] = ord("0")
    with pytest.raises(ValueError, match="format wantbuild-world/0"):
        decode_world(bytes(data))


# -- rebuild from snapshots -------------------------------------------------------------------------------------
async def test_rebuild_from_snapshot_equals_full_replay(tmp_path: Path) -> None:
    """Restart loads the newest snapshot and replays the tail: the same World as a full replay, time travel too."""
    path = str(tmp_path / "s.db")
    async with open_log(path) as log:
        await fill(log, 20)
        world = await rebuild(log, until_seq=40, snapshots=False)
        await log.write_snapshot(40, world.last_at, SNAPSHOT_FORMAT, encode_world(world))
        await fill_more(log)
    async with open_log(path, writer=False) as log:
        full = await rebuild(log, snapshots=False)
        fast = await rebuild(log)
        assert fast.restored.snapshot_seq == 40
        assert fast.restored.tail_events == full.last_seq - 40
        assert full.diff(fast) == []
        for until in (10, 40, 41, full.last_seq):
            old = await rebuild(log, until_seq=until)
            assert (await rebuild(log, until_seq=until, snapshots=False)).diff(old) == []
            assert old.restored.snapshot_seq == (40 if until >= 40 else None)
        at = (await rebuild(log, until_seq=45, snapshots=False)).last_at
        assert (await rebuild(log, until_time=at, snapshots=False)).diff(await rebuild(log, until_time=at)) == []


async def fill_more(log: Log) -> None:
    """Taint and rebuild the first five partitions (events after a snapshot change states it holds)."""
    for i in range(5):
        ref, run = f"daily/{i}", f"r-again-{i}"
        await log.append("partition", ref, 2, PartitionTainted(reason="late"))
        await log.append("job_run", run, 0, JobRunQueued(job="daily", partitions=(ref,)))
        await log.append("partition", ref, 3, PartitionBuilding(job_run_id=run))


async def test_damaged_snapshot_skipped_and_reported(tmp_path: Path, logs: list[EventDict]) -> None:
    """A newest snapshot that fails its checksum is skipped for the previous one, logged and reported; with none
    usable, a full replay: the World is right either way."""
    path = str(tmp_path / "s.db")
    async with open_log(path) as log:
        await fill(log, 10)
        for seq in (20, 40):
            w = await rebuild(log, until_seq=seq, snapshots=False)
            await log.write_snapshot(seq, w.last_at, SNAPSHOT_FORMAT, encode_world(w))
        await corrupt_piece(log, 40)
        full = await rebuild(log, snapshots=False)
        got = await rebuild(log)
        assert full.diff(got) == []
        assert got.restored.snapshot_seq == 20
        assert [s.seq for s in got.restored.skipped] == [40]
        assert re.search("fails its check: (checksum mismatch|its bytes do not decompress)",
                         got.restored.skipped[0].reason)
        assert [e["seq"] for e in logs if e["event"] == "snapshot skipped" and e["log_level"] == "warning"] == [40]
        await corrupt_piece(log, 20)
        got = await rebuild(log)
        assert (got.restored.snapshot_seq, [s.seq for s in got.restored.skipped]) == (None, [40, 20])
        assert full.diff(got) == []


async def test_snapshot_of_older_format_ignored(tmp_path: Path) -> None:
    """A snapshot in another format is ignored (reported as skipped), never decoded: full replay instead."""
    path = str(tmp_path / "s.db")
    async with open_log(path) as log:
        await fill(log, 4)
        await log.write_snapshot(20, 0.0, "wantbuild-world/0+000000000000", b"an old layout")
        got = await rebuild(log)
    assert got.restored.snapshot_seq is None
    assert "format wantbuild-world/0" in got.restored.skipped[0].reason
    assert got.last_seq == 20


async def test_snapshot_of_format_1_skipped_then_replaced(tmp_path: Path) -> None:
    """A snapshot written before settled entities had chunks of their own (format 1) is skipped and reported: the
    log replays in full, and a new snapshot (this format) is used from then on."""
    path = str(tmp_path / "s.db")
    old = SNAPSHOT_FORMAT.replace("wantbuild-world/2+", "wantbuild-world/1+")
    assert old != SNAPSHOT_FORMAT
    async with open_log(path) as log:
        await fill(log, 4)
        await log.write_snapshot(20, 0.0, old, b"a format-1 snapshot")
        got = await rebuild(log)
        assert got.restored.snapshot_seq is None
        assert got.restored.skipped[0].reason.startswith("format wantbuild-world/1+")
        await log.write_snapshot(20, got.last_at, SNAPSHOT_FORMAT, encode_world(got))
        again = await rebuild(log)
        assert again.restored.snapshot_seq == 20
        assert again == got


# -- the runtime ------------------------------------------------------------------------------------------------
def graph() -> wantbuild.Graph:
    g = wantbuild.Graph("snapshots")

    @g.job("daily", outputs="daily/{i}", batch=10)
    async def daily(ctx: wantbuild.JobContext) -> None:
        return None

    return g


async def test_runtime_takes_snapshots_in_background_and_restarts_from_them(tmp_path: Path) -> None:
    """With snapshot_every, the runtime snapshots as it goes (keeping two) and a restart starts from the newest:
    the World equals a full replay's."""
    path = tmp_path / "rt.db"
    g = graph()
    async with wantbuild.open(path, g, snapshot_every=50) as rt:
        rt.snapshotter.check_interval = 0.01
        for k in range(4):
            await (await rt.want([f"daily/{k}-{i}" for i in range(40)])).done(timeout=30)
            await rt.wait_idle(timeout=30)
            with anyio.fail_after(10):  # the background task catches up: less than 50 events not covered
                while rt.log.last_seq - rt.snapshotter.last_seq >= 50:  # noqa: ASYNC110 - polls a counter
                    await anyio.sleep(0.01)
        taken = list(rt.snapshotter.taken)
        assert len(taken) >= 2
        assert all(s.seq - p.seq >= 50 for p, s in itertools.pairwise(taken))
        assert max(rt.snapshotter.copy_seconds) < 1.0
    async with open_log(str(path), writer=False) as log:
        stored = await log.snapshots()
        assert [s.seq for s in stored] == [s.seq for s in taken[-2:]][::-1]
        full = await rebuild(log, snapshots=False)
    async with wantbuild.open(path, g) as rt:
        restored = rt.recovery.restored
        assert restored is not None
        assert restored.snapshot_seq == stored[0].seq
        assert full.diff(rt.world) == []


async def test_runtime_restart_from_snapshot_on_postgres(pg_url: str) -> None:
    """On PostgreSQL too: rt.snapshot() stores one in the log's schema and the next runtime starts from it."""
    g = graph()
    async with wantbuild.open(pg_url, g) as rt:
        await (await rt.want([f"daily/{i}" for i in range(30)])).done(timeout=30)
        info = await rt.snapshot()
        await (await rt.want(["daily/99"])).done(timeout=30)
    async with open_log(pg_url, writer=False) as log:
        full = await rebuild(log, snapshots=False)
    async with wantbuild.open(pg_url, g) as rt:
        assert rt.recovery.restored is not None
        assert rt.recovery.restored.snapshot_seq == info.seq
        assert full.diff(rt.world) == []


async def test_restored_entities_take_new_transitions(tmp_path: Path) -> None:
    """Entities restored from a snapshot take new transitions: after a restart from it, a Live partition is tainted,
    leased and rebuilt by a new run (its events follow its snapshot state), and the World equals a full replay."""
    path = tmp_path / "rt.db"
    g = graph()
    async with wantbuild.open(path, g, snapshot_every=None, snapshot_interval=None) as rt:
        await (await rt.want([f"daily/{i}" for i in range(10)])).done(timeout=30)
        await rt.wait_quiescent()
        info = await rt.snapshot()
        built = rt.get_partition("daily/3")
    async with wantbuild.open(path, g, snapshot_every=None, snapshot_interval=None) as rt:
        assert rt.recovery.restored is not None
        assert rt.recovery.restored.snapshot_seq == info.seq
        assert rt.get_partition("daily/3") == built
        await rt.taint(["daily/3"], "late rows", timeout=30)
        assert str((await (await rt.want(["daily/3"])).done(timeout=30)).status) == "Successful"
        await rt.wait_quiescent()
        again = rt.get_partition("daily/3")
        assert str(again.status) == "Live"
        assert again.generation > built.generation
        assert again.entity_seq > built.entity_seq
        assert again.built_by != built.built_by
        live = rt.world
    async with open_log(str(path), writer=False) as log:
        full, violations = await check_log(log)
    assert violations == []
    assert full.diff(live) == []


# -- the CLI ----------------------------------------------------------------------------------------------------
def test_cli_replay_verify_checks_each_snapshot(tmp_path: Path) -> None:
    """`replay --verify` compares each snapshot with a replay up to its seq: a wrong one fails it, naming the seq;
    `status` says which snapshot it loaded; `snapshot` takes one and `--list` lists them."""
    path = tmp_path / "v.db"

    async def setup() -> float:
        async with open_log(str(path)) as log:
            await fill(log, 6)
            good = await rebuild(log, until_seq=10, snapshots=False)
            await log.write_snapshot(10, good.last_at, SNAPSHOT_FORMAT, encode_world(good))
            return good.last_at

    async def wrong_snapshot(at: float) -> None:
        async with open_log(str(path)) as log:
            wrong = await rebuild(log, until_seq=9, snapshots=False)  # the state of seq 9, claimed for seq 20
            wrong.last_seq = 20
            await log.write_snapshot(20, at, SNAPSHOT_FORMAT, encode_world(wrong))

    at = anyio.run(setup)
    runner = CliRunner()
    ok = runner.invoke(cli, ["replay", str(path), "--verify"])
    assert ok.exit_code == 0, ok.output
    assert "snapshots: each equals a replay up to its seq" in ok.output
    took = runner.invoke(cli, ["snapshot", "--db", str(path)])
    assert took.exit_code == 0, took.output
    assert "snapshot at seq 30" in took.output
    status = runner.invoke(cli, ["status", "--db", str(path)])
    assert "loaded the snapshot at seq 30, then replayed 0 events" in status.output
    listed = runner.invoke(cli, ["snapshot", "--list", "--db", str(path)])
    assert "30" in listed.output
    assert "10" in listed.output
    anyio.run(wrong_snapshot, at)
    bad = runner.invoke(cli, ["replay", str(path), "--verify"])
    assert bad.exit_code == 1
    assert "snapshot at seq 20 differs from a replay up to that seq" in bad.output


# -- retention (compact) ----------------------------------------------------------------------------------------
async def test_compact_drops_ended_entities_events_and_keeps_the_state(log_target: str) -> None:
    """`compact` keeps a snapshot at the seq and drops the events up to it of ended runs (partitions keep theirs):
    the state rebuilt afterwards is the same, the log still verifies and opens as a writer, and a late event of a
    compacted run appends; time travel before the seq is refused with the reason."""
    async with open_log(log_target) as log:
        await fill(log, 10)  # 10 ended runs (3 events each), 10 partitions (2 each)
        before = await rebuild(log, snapshots=False)
        done = await compact(log, 30)
        assert (done.through_seq, done.snapshot_written, done.entities, done.events_dropped) == (30, True, 6, 18)
        assert log.compacted_through == 30
        await log.append("job_run", "r-0", 3, JobRunResultIgnored(status="Succeeded", reason="late"))
    async with open_log(log_target) as log:  # the writer's open check accepts the dropped links
        assert log.compacted_through == 30
        report = await log.verify()
        assert list(report.problems) == []
        assert report.events == 51 - 18
        after = await rebuild(log)
        assert after.restored.snapshot_seq == 30
        assert [d.split(":")[0] for d in after.diff(before, limit=100)] == ["job_run r-0"]  # the late event only
        assert after.runs["r-0"].ignored_results == 1
        assert (await check_log(log))[1] == []
        with pytest.raises(ReplayError, match="compacted through seq 30"):
            await rebuild(log, until_seq=20)
        assert (await rebuild(log, until_seq=40)).last_seq == 40
        assert [r.seq for r in await log.history("partition", "daily/0")] == [2, 5]
        assert [r.seq for r in await log.history("job_run", "r-0")] == [51]


async def test_a_compacted_log_without_its_snapshot_says_so(tmp_path: Path) -> None:
    """If the snapshot kept at the compaction point is lost, rebuilding fails with an error naming the seq and the
    fix, never a wrong World."""
    path = str(tmp_path / "c.db")
    async with open_log(path) as log:
        await fill(log, 4)
        await compact(log, 10)
        await log.delete_snapshots([10])
        with pytest.raises(ReplayError, match="no usable snapshot at or after that seq"):
            await rebuild(log)


def test_cli_compact_and_runtime_on_a_compacted_log(tmp_path: Path) -> None:
    """`wantbuild compact --before SEQ` compacts a runtime's log; the runtime then reopens it from the snapshot,
    and `replay --verify` still passes; `--until` before the seq fails naming it."""
    path = tmp_path / "rt.db"
    g = graph()

    async def work() -> int:
        async with wantbuild.open(path, g) as rt:
            await (await rt.want([f"daily/{i}" for i in range(30)])).done(timeout=30)
            return int(rt.log.last_seq)

    async def again() -> tuple[Any, Any]:
        async with wantbuild.open(path, g) as rt:
            restored = rt.recovery.restored
            await (await rt.want(["daily/99"])).done(timeout=30)
            return restored, rt.world.copy()

    last = anyio.run(work)
    runner = CliRunner()
    done = runner.invoke(cli, ["compact", "--before", str(last), "--db", str(path), "--yes"])
    assert done.exit_code == 0, done.output
    assert f"time travel now starts at seq {last}" in done.output
    restored, _ = anyio.run(again)
    assert restored.snapshot_seq == last
    ok = runner.invoke(cli, ["replay", str(path), "--verify"])
    assert ok.exit_code == 0, ok.output
    early = runner.invoke(cli, ["replay", str(path), "--until", "5"])
    assert early.exit_code == 1
    assert f"compacted through seq {last}" in early.output


# -- SIGKILL while snapshots are taken ---------------------------------------------------------------------------
_SNAPSHOTTER = """
import asyncio, sys
import wantbuild

g = wantbuild.Graph("snapshot-kill")


@g.job("daily", outputs="daily/{i}", batch=5)
async def daily(ctx):
    return None


async def main(path, evict):
    async with wantbuild.open(path, g, evict_every=evict or None, snapshot_every=None, snapshot_interval=None,
                              shutdown_grace=0.5) as rt:
        for i in range(10_000):
            refs = [f"daily/{(7 * i + j) % 120}" for j in range(10)]
            if i % 3 == 2:
                await rt.taint(refs[:3], "rebuilt by the drill")
            await (await rt.want(refs)).done()
            await rt.snapshot()
            print("snapshot", flush=True)


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _kill_while_snapshotting(path: str, evict: int, snapshots: int, delay: float) -> None:
    """Run a runtime that builds, taints and snapshots in a loop; SIGKILL it ``delay`` s after its ``snapshots``-th
    snapshot (mid-build or mid-snapshot)."""
    proc = subprocess.Popen([sys.executable, "-c", _SNAPSHOTTER, path, str(evict)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        for _ in range(snapshots):
            assert proc.stdout.readline() == "snapshot\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


async def _check_after_kill(path: str, evict: int) -> None:
    async with open_log(path, **({"lease_wait": 10} if path.startswith("postgresql") else {})) as log:
        assert await verify_snapshots(log) == []  # every snapshot listed equals a full replay up to its seq
        full = await rebuild(log, snapshots=False)
        fast = await rebuild(log)
        assert fast.restored.snapshot_seq is not None
        assert full.diff(fast) == []
        if evict:
            lazy = await rebuild(log, evicting=True)
            assert lazy.evicted_count("partition") > 0
            assert lazy.load_now(log)
            assert lazy.resolved() == full.snapshot()
            assert lazy.counts() == full.counts()
    g = wantbuild.Graph("snapshot-kill")
    g.job("daily", outputs="daily/{i}", batch=5)(_noop)
    async with wantbuild.open(path, g, evict_every=evict or None, snapshot_every=None, snapshot_interval=None,
                              shutdown_grace=0.5) as rt:
        assert rt.recovery.restored is not None
        assert rt.recovery.restored.snapshot_seq is not None
        assert str((await (await rt.want(["daily/0", "daily/500"])).done()).status) == "Successful"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0.0, 0.03])
async def test_sigkill_while_snapshotting(log_target: str, delay: float) -> None:
    """SIGKILL of a runtime that snapshots as it builds: what is listed equals a replay, restart starts from it."""
    await anyio.to_thread.run_sync(_kill_while_snapshotting, log_target, 0, 3, delay)
    await _check_after_kill(log_target, 0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0.0, 0.03])
async def test_sigkill_while_an_evicting_runtime_snapshots(tmp_path: Path, delay: float) -> None:
    """SIGKILL of an evicting runtime as it snapshots (its evicted states read back from the log): every snapshot
    listed equals a replay, and a restart leaves the snapshot's settled entities evicted and serves."""
    path = str(tmp_path / "kill.db")
    await anyio.to_thread.run_sync(_kill_while_snapshotting, path, 1, 3, delay)
    await _check_after_kill(path, 1)
