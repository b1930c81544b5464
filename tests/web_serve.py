"""Keep a runtime serving a log made by ``wantbuild demo``, with the demo's graph (for the web view's tests).

``python tests/web_serve.py DB DATA_DIR``: prints ``serving`` once the runtime is open, serves its command inbox
(wants created from the web view are built), and shuts down cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import sys

import anyio
import structlog

from supervisor import open_runtime
from wantbuild._build import until_signal
from wantbuild._example import example_graph


async def main(db: str, data: str) -> None:
    async with open_runtime(db, example_graph(data, work_seconds=0.01)):
        print("serving", flush=True)
        await until_signal(None)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main, sys.argv[1], sys.argv[2])
