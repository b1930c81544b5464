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
from wantbuild._example import example_graph
from wantbuild._signals import Interrupts


async def main(db: str, data: str, interrupts: Interrupts) -> None:
    async with open_runtime(db, example_graph(data, work_seconds=0.01)):
        print("serving", flush=True)
        with interrupts.stoppable():
            await anyio.sleep_forever()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with Interrupts(announce=False) as stop:
        anyio.run(main, sys.argv[1], sys.argv[2], stop)
