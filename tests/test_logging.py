"""Library logging is quiet unless the embedder asks (issue #10): stdlib logging by default, structlog when set."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import structlog

from eventlog import get_logger

ROOT = Path(__file__).resolve().parents[1]


def test_an_embedder_who_configured_nothing_sees_nothing_on_stdout(tmp_path: Path) -> None:
    """A program that runs wants (a retried failure, a derived want) without configuring logging prints nothing
    of wantbuild's on stdout and no DEBUG or INFO lines on stderr."""
    program = textwrap.dedent(f"""
        import anyio, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from runtime_graphs import chain_graph
        import wantbuild

        async def main():
            g, _ = chain_graph(fail_times={{"raw/1": 1}}, retries=1)
            async with wantbuild.open({str(tmp_path / "wb.db")!r}, g) as rt:
                st = await (await rt.want("daily/1")).done(timeout=30)
                print("RESULT", st.status)

        anyio.run(main)
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "RESULT Successful\n"
    assert [line for line in done.stderr.splitlines() if "debug" in line.lower() or "info" in line.lower()] == []


def test_warnings_go_to_the_stdlib_logger_of_the_same_name(caplog: pytest.LogCaptureFixture) -> None:
    """Unconfigured, a library warning reaches stdlib logging under its name, rendered with its key=values."""
    with caplog.at_level(logging.DEBUG, logger="wantbuild.test"):
        get_logger("wantbuild.test", run="r-1").warning("it happened", count=3, path="a b")
        get_logger("wantbuild.test").debug("small detail")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("wantbuild.test", logging.WARNING, "it happened run='r-1' count=3 path='a b'"),
        ("wantbuild.test", logging.DEBUG, "small detail"),
    ]


def test_a_configured_structlog_gets_every_event() -> None:
    """Once the embedder configures structlog, library events go through it with their bound context."""
    structlog.configure(processors=[])
    with structlog.testing.capture_logs() as logs:
        get_logger("wantbuild.test", run="r-1").bind(job="daily").info("started", attempt=2)
    assert logs == [{"event": "started", "run": "r-1", "job": "daily", "attempt": 2, "log_level": "info"}]


def test_enabled_says_whether_a_level_would_emit(caplog: pytest.LogCaptureFixture) -> None:
    """``enabled`` follows stdlib logging's level while structlog is unconfigured, and a filtering structlog
    wrapper's level once it is configured (a job run binds its logger only when a line would be emitted)."""
    log = get_logger("wantbuild.test_enabled")
    with caplog.at_level(logging.INFO, logger="wantbuild.test_enabled"):
        assert log.enabled("info")
        assert not log.enabled("debug")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    assert log.enabled("error")
    assert log.enabled("warning")
    assert not log.enabled("info")
    assert not log.enabled("debug")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    assert log.enabled("debug")
