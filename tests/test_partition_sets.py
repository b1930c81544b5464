"""Partition sets: typed parameters, ranges parsed against a graph, the compact set and its errors."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import InvalidRef, ParamType, PartitionSet, PartitionSetError, Range
from supervisor import Graph, GraphError, NoJobForRef, load_graph, parse_partition_set, read_refs
from supervisor._graph import _describe


async def _noop(ctx: Any) -> None:
    return None


def graph() -> Graph:
    g = Graph("sets")
    g.job("daily", outputs="daily/{date}", params={"date": "date"})(_noop)
    g.job("hourly", outputs="hourly/{date}T{hour}", params={"date": "date", "hour": "int"})(_noop)
    g.job("stamp", outputs="stamp/{hour}", params={"hour": "hour"})(_noop)
    g.job("region", outputs="region/{name}/{n}", params={"name": ["eu", "us", "ap"], "n": "int"})(_noop)
    g.job("raw", outputs="raw/{key}")(_noop)
    return g


G = graph()


def test_daily_range_counts_without_expanding() -> None:
    """A range of dates counts, indexes and tests membership exactly, ends included."""
    s = parse_partition_set(G, ["daily/2026-01-01..2026-11-30"])
    assert (len(s), s[0], s[-1], s[31]) == (334, "daily/2026-01-01", "daily/2026-11-30", "daily/2026-02-01")
    assert "daily/2026-06-15" in s
    assert "daily/2026-12-01" not in s
    assert "daily/2026-6-15" not in s  # not the canonical spelling
    assert list(s)[:2] == ["daily/2026-01-01", "daily/2026-01-02"]


def test_hour_of_day_range_keeps_width() -> None:
    """``hourly/2026-11-02T00..23`` ranges over the int {hour} and keeps its two digits."""
    s = parse_partition_set(G, ["hourly/2026-11-02T00..23"])
    assert (len(s), s[0], s[9], s[-1]) == (24, "hourly/2026-11-02T00", "hourly/2026-11-02T09", "hourly/2026-11-02T23")
    assert "hourly/2026-11-02T7" not in s


def test_hour_type_range_crosses_days() -> None:
    """An ``hour`` typed value (YYYY-MM-DDTHH) ranges across midnight."""
    s = parse_partition_set(G, ["stamp/2026-11-02T22..2026-11-03T01"])
    assert list(s) == ["stamp/2026-11-02T22", "stamp/2026-11-02T23", "stamp/2026-11-03T00", "stamp/2026-11-03T01"]


def test_enum_and_int_ranges_share_one_ref_once() -> None:
    """Two ranges of one pattern over different parameters that share a ref yield it once."""
    s = parse_partition_set(G, ["region/eu..ap/3", "region/eu/1..5"])
    assert sorted(s) == sorted(["region/eu/3", "region/us/3", "region/ap/3", "region/eu/1", "region/eu/2",
                                "region/eu/4", "region/eu/5"])
    assert len(s) == len(list(s)) == 7


def test_combination_drops_duplicates() -> None:
    """Ranges, refs and overlapping ranges combine into one set without duplicates."""
    s = parse_partition_set(G, ["daily/2026-01-01..2026-01-10", "daily/2026-01-05..2026-01-20", "daily/2026-01-03",
                                "raw/x"], refs=["raw/x", "raw/y", "daily/2026-01-21"])
    assert len(s.ranges) == 1
    assert len(s) == 20 + 3
    assert list(s)[-3:] == ["raw/x", "raw/y", "daily/2026-01-21"]


def test_a_million_days_is_instant_and_tiny() -> None:
    """A range over a million dates is stored as one range and serialised in a few hundred bytes."""
    s = parse_partition_set(G, ["daily/0001-01-01..2738-11-28"])
    assert len(s) == 1_000_000
    encoded = json.dumps(s.to_json())
    assert len(encoded) < 400
    assert PartitionSet.from_json(json.loads(encoded)) == s
    assert s.index("daily/2026-01-01") == dt.date(2026, 1, 1).toordinal() - 1
    assert next(s.batches(3, start=999_998)) == ["daily/2738-11-27", "daily/2738-11-28"]


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param("daily/2026-01-01..12", "its end '12' is not a date (YYYY-MM-DD)", id="crosses-type"),
    pytest.param("daily/2026-01-01..12", "write e.g. daily/2026-01-01..2026-01-12", id="crosses-type-fix"),
    pytest.param("daily/2026-11-30..2026-01-01", "is reversed", id="reversed"),
    pytest.param("daily/2026-11-30..2026-01-01", "daily/2026-01-01..2026-11-30", id="reversed-fix"),
    pytest.param("raw/a..b", "which has no type; declare it on the job", id="untyped"),
    pytest.param("daily/2026-01-01..", "has no end", id="no-end"),
    pytest.param("nothing/1..2", "no job's output pattern matches the range", id="no-job"),
    pytest.param("hourly/2026-11-02T00..123", "different widths", id="widths"),
    pytest.param("daily/2026-02-30..2026-03-02", "'2026-02-30' is not a date", id="not-a-date"),
])
def test_bad_ranges_name_the_spec_and_the_fix(spec: str, expected: str) -> None:
    """Every bad range is a PartitionSetError naming the spec and saying what to write."""
    with pytest.raises(PartitionSetError) as err:
        parse_partition_set(G, [spec])
    assert spec in str(err.value)
    assert expected in str(err.value)


def test_literal_refs_are_checked_against_the_graph() -> None:
    """A literal ref no job produces, or of the wrong type, is refused; an empty set too."""
    with pytest.raises(NoJobForRef, match="nope/1"):
        parse_partition_set(G, ["nope/1"])
    with pytest.raises(NoJobForRef, match="is a date"):
        parse_partition_set(G, ["daily/yesterday"])
    with pytest.raises(PartitionSetError, match="empty"):
        parse_partition_set(G, [])


def test_read_refs_skips_comments_and_names_the_line(tmp_path: Path) -> None:
    """A refs file: blank lines and # comments skipped; a bad line is named with its number."""
    assert read_refs(["daily/2026-01-01\n", "\n", "# c\n", "  raw/x  \n"], source="f") == ["daily/2026-01-01", "raw/x"]
    with pytest.raises(InvalidRef, match=r"f, line 2"):
        read_refs(["raw/a\n", "raw//b\n"], source="f")


def test_typed_params_in_the_graph_file(tmp_path: Path) -> None:
    """params = { date = "date", region = [...] } in a graph file types the job's placeholders."""
    (tmp_path / "jobs.py").write_text("async def f(ctx):\n    pass\n")
    (tmp_path / "g.toml").write_text(textwrap.dedent("""
        [job.daily]
        outputs = "daily/{region}/{date}"
        function = "jobs:f"
        params = { date = "date", region = ["eu", "us"] }
    """))
    g = load_graph(tmp_path / "g.toml")
    assert len(parse_partition_set(g, ["daily/eu..us/2026-01-01", "daily/us/2026-01-01..2026-01-31"])) == 32
    assert g["daily"].data_time("daily/eu/2026-01-02") == dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("params", "expected"), [
    pytest.param({"day": "date"}, "no output pattern has", id="unknown-name"),
    pytest.param({"date": "datetime"}, "unknown parameter type 'datetime'", id="unknown-type"),
    pytest.param({"date": []}, "non-empty list", id="empty-enum"),
    pytest.param({"date": ["a", "a"]}, "twice", id="enum-twice"),
])
def test_bad_param_declarations(params: dict[str, Any], expected: str) -> None:
    """A declaration that types nothing, an unknown type or a bad enum is a GraphError naming the job."""
    with pytest.raises(GraphError, match="job 'd'") as err:
        Graph("x").job("d", outputs="d/{date}", params=params)(_noop)
    assert expected in str(err.value)


def test_typed_params_change_the_fingerprint_only_when_declared() -> None:
    """Declaring params changes a graph's fingerprint; a graph without any keeps its old one."""
    plain, typed = Graph("a"), Graph("a")
    plain.job("d", outputs="d/{date}")(_noop)
    typed.job("d", outputs="d/{date}", params={"date": "date"})(_noop)
    assert plain.fingerprint() != typed.fingerprint()
    assert "params" not in _describe(plain["d"])
    assert "pool" not in _describe(plain["d"])


def test_data_time_prefers_the_hour() -> None:
    """A ref's data time is the start of its hour when it has an hour-typed value, else of its date (UTC)."""
    assert G["stamp"].data_time("stamp/2026-11-02T05") == dt.datetime(2026, 11, 2, 5, tzinfo=dt.UTC).timestamp()
    assert G["hourly"].data_time("hourly/2026-11-02T05") == dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()
    assert G["raw"].data_time("raw/x") is None
    s = parse_partition_set(G, ["daily/2026-01-01..2026-01-31"])
    assert s.data_time == dt.datetime(2026, 1, 31, tzinfo=dt.UTC).timestamp()


# -- properties of the compact set -------------------------------------------------------------------------

KINDS = {"date": ParamType("date"), "hour": ParamType("hour"), "int": ParamType("int"),
         "enum": ParamType("enum", ("a", "b", "c", "d", "e"))}


@st.composite
def ranges(draw: st.DrawFn) -> Range:
    name = draw(st.sampled_from(sorted(KINDS)))
    kind = KINDS[name]
    if name == "enum":
        lo = draw(st.integers(0, 4))
        hi = draw(st.integers(lo, 4))
    else:
        base = {"date": 739000, "hour": 739000 * 24, "int": -50}[name]
        lo = draw(st.integers(base, base + 200))
        hi = draw(st.integers(lo, lo + 60))
    width = draw(st.sampled_from([0, 4])) if name == "int" and lo >= 0 else 0
    prefix = draw(st.sampled_from(["p/", "q/x-"]))
    return Range(prefix, draw(st.sampled_from(["", "/z"])), kind, lo, hi, width)


@settings(max_examples=150, deadline=None)
@given(st.lists(ranges(), max_size=4), st.lists(st.sampled_from(["p/1", "p/2026-01-01", "r/x", "q/x-a"]), max_size=4),
       st.integers(1, 7), st.integers(0, 80))
def test_set_behaves_like_its_expansion(rs: list[Range], refs: list[str], size: int, start: int) -> None:
    """len, iteration, indexing, membership, batches and JSON agree with the plain list of distinct refs."""
    s = PartitionSet.of(rs, refs)
    expanded = list(s)
    assert len(expanded) == len(set(expanded)) == len(s)
    naive = list(dict.fromkeys([r.ref(i) for r in rs for i in range(r.lo, r.hi + 1)] + refs))
    assert set(expanded) == set(naive)
    for i, ref in enumerate(expanded):
        assert s[i] == ref
        assert ref in s
        assert s.index(ref) == i
    assert [ref for batch in s.batches(size, start=start) for ref in batch] == expanded[start:]
    assert PartitionSet.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert "p/none" not in s
