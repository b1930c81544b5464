"""Shared test set-up: the tests folder is importable (shared graphs for tests and their subprocesses).

Tests that need a real server or program (PostgreSQL, Dask, Ray, Chromium) call :func:`need` when it is
missing: on a developer machine the test is skipped with a message that says how to run it; under
``WANTBUILD_REQUIRE_SERVERS=1`` (what ``.ci/run`` sets) it fails instead, so CI never passes by skipping.
"""

import asyncio
import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import structlog
import structlog.testing
from structlog.typing import EventDict

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Ray (2.60) listens on every interface and advertises the machine's external address, whatever
# `_node_ip_address="127.0.0.1"` says, unless it believes the cluster is this machine alone: with this variable
# (read when ray is imported), every Ray node the tests start listens and advertises on 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def servers_required() -> bool:
    """Whether a missing server must fail the test (CI) rather than skip it (a developer machine)."""
    return os.environ.get("WANTBUILD_REQUIRE_SERVERS", "") not in ("", "0")


def need(what: str, how: str) -> NoReturn:
    """``what`` is unavailable: skip (saying ``how`` to get it), or fail under WANTBUILD_REQUIRE_SERVERS=1."""
    message = f"{what} is not available; {how}"
    if servers_required():
        pytest.fail(f"{message} (WANTBUILD_REQUIRE_SERVERS=1: CI must run this test, not skip it)")
    pytest.skip(message)


# -- PostgreSQL: one server per test session, one schema (one log) per test ------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server for this session: ``WANTBUILD_TEST_PG_URL``, or one started here.

    The server is started once (Debian's binaries, a temp dir, as ``nobody`` under root: ``tests/pg_server.py``)
    and stopped when the session ends.
    """
    given = os.environ.get("WANTBUILD_TEST_PG_URL")
    if given:
        yield given
        return
    from pg_server import HOW, start_server

    server = start_server()
    if server is None:
        need("PostgreSQL", HOW)
    try:
        yield server.url
    finally:
        server.remove()


def with_schema(url: str, schema: str) -> str:
    """``url`` pointing at the log in ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema (on a thread of its own: the test's event loop is not to be touched)."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(drop())
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL of a fresh log of its own (a new schema) on the session's PostgreSQL server; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield with_schema(pg_server, schema)
    drop_schema(pg_server, schema)


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres")])
def log_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's log lives, once per backend: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "log.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """Structlog entries, whatever another test configured (a filtering wrapper would hide our warnings)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(**saved)


@pytest.fixture(autouse=True)
def _library_logging_unconfigured() -> Iterator[None]:
    """Every test starts with structlog unconfigured, as an embedder's program does (tests that configure it,
    the CLI's included, leave it configured otherwise)."""
    yield
    structlog.reset_defaults()
