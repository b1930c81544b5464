"""Open a log as its writer, say so on stdout, and hold the writer lock until stdin closes."""

from __future__ import annotations

import asyncio
import sys

import structlog

from eventlog_helpers import open_log


async def main(path: str) -> None:
    async with open_log(path):
        sys.stdout.write("holding\n")
        sys.stdout.flush()
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main(sys.argv[1]))
