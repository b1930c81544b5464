"""PostgreSQL for the benchmarks: a server (the one at ``--url``, or a throwaway one from Debian's binaries) and
fresh schemas."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def schema_url(base: str, schema: str) -> str:
    """``base`` pointing at the log in ``schema``."""
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


async def drop_schema(base: str, schema: str) -> None:
    """Drop ``schema`` (a previous run's log) from the database of ``base``."""
    import asyncpg

    from eventlog._target import PgTarget

    conn = await asyncpg.connect(PgTarget(base).dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The server's URL: ``url`` itself, or (``None`` or ``"postgres"``) a throwaway server, stopped at the end."""
    if url not in (None, "postgres"):
        assert url is not None
        yield url
        return
    from pg_server import HOW, start_server

    srv = start_server()
    if srv is None:
        raise SystemExit(f"no PostgreSQL server: {HOW}")
    try:
        yield srv.url
    finally:
        srv.remove()
