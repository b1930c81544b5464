"""Shared test set-up: the tests folder is importable (shared graphs for tests and their subprocesses).

Tests that need a real server or program (PostgreSQL, Dask, Ray, Chromium) call :func:`need` when it is
missing: on a developer machine the test is skipped with a message that says how to run it; under
``WANTBUILD_REQUIRE_SERVERS=1`` (what ``.ci/run`` sets) it fails instead, so CI never passes by skipping.
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import structlog

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


@pytest.fixture(autouse=True)
def _library_logging_unconfigured() -> Iterator[None]:
    """Every test starts with structlog unconfigured, as an embedder's program does (tests that configure it,
    the CLI's included, leave it configured otherwise)."""
    yield
    structlog.reset_defaults()
