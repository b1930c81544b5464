"""Runs a runtime on argv[1] with slow in-process jobs, wants daily/1..6, prints "building" once runs are in
flight, then keeps running until it is SIGKILLed by the test."""

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime_graphs import chain_graph  # noqa: E402

from supervisor import open_runtime  # noqa: E402


async def main() -> None:
    g, _ = chain_graph(slow=60, batch=2)  # runs stay in flight until the test kills the process
    async with open_runtime(sys.argv[1], g) as rt:
        await rt.want([f"daily/{i}" for i in range(1, 7)])
        while len(rt.partitions("Building")) < 2:
            await anyio.sleep(0.01)
        print("building", flush=True)
        await anyio.sleep(1000)


anyio.run(main)
