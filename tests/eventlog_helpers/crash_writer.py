"""Append forever from many tasks, printing each acknowledged append; the crash test SIGKILLs this.

Usage: ``python crash_writer.py LOG_PATH TASKS``. Each line on stdout is ``seq kind id entity_seq n``,
written and flushed only after ``append`` returned, i.e. after the event was committed.
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from eventlog_helpers import ThingChanged, open_log


async def main(path: str, tasks: int) -> None:
    out = sys.stdout

    async with open_log(path, max_batch=64) as log:

        async def writer(i: int) -> None:
            eid = f"thing-{i}"
            n = 0
            while True:
                rec = await log.append("thing", eid, n, ThingChanged(n=n, note="x" * (n % 50)))
                n += 1
                out.write(f"{rec.seq} {rec.entity_kind} {rec.entity_id} {rec.entity_seq} {n}\n")
                out.flush()

        out.write("ready\n")
        out.flush()
        async with asyncio.TaskGroup() as tg:
            for i in range(tasks):
                tg.create_task(writer(i))


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
