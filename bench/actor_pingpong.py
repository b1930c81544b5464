"""Message throughput of the actor system against bare asyncio.Queue ping-pong, and activation cost.

Two workloads, each run on the actor system (passivation on: ``passivate_after=0``; off: ``None``) and on a
bare-asyncio baseline doing the same work with ``asyncio.Queue`` (bounded like a mailbox) and one future per
request:

- ``ask``:  N client tasks, each asking its own actor M times in a row (request/reply: one message each way,
  counted as one message, as the baseline's ``(msg, future)`` put is).
- ``tell``: N pairs of actors bouncing a ball M times by ``tell`` (each hop is one message).

Every figure is the median of ``--runs`` runs (3 by default). The last line is the headline::

    ratio=<actor msgs/s over baseline msgs/s> actor_msgs_per_s=... baseline_msgs_per_s=...

where the msgs/s are totals over all four actor configurations and their baselines (the project target for the
full benchmark is ratio >= 0.6).

Activation cost: one tell to each of ``--activations`` distinct keys with ``passivate_after=0`` (every message
activates an actor and passivates it), run in a fresh subprocess so its peak RSS (``resource.getrusage``) is its
own.

    python bench/actor_pingpong.py                    # N=1000 actors, M=100 pings, 1,000,000 activations
    python bench/actor_pingpong.py --activations 0    # skip the activation run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors._actor import Actor
from actors._system import ActorSystem

MAILBOX = 256


# -- actor side --------------------------------------------------------------------------------------------------
class Echo(Actor[int]):
    kind = "echo"

    async def handle(self, msg: int) -> int:
        return msg + 1


class Bouncer(Actor[int]):
    """Tells the ball to its partner (``ping`` <-> ``pong``, same key) until it has bounced M times."""

    kind = "bouncer"
    done: dict[str, asyncio.Future[None]] = {}

    def __init__(self, key: str, other: str) -> None:
        super().__init__(key)
        self.other = other

    async def handle(self, msg: int) -> None:
        if msg == 0:
            self.done[self.key].set_result(None)
        else:
            await self.system.tell(self.other, self.key, msg - 1)


async def actor_ask(n: int, m: int, passivate_after: float | None) -> float:
    async with ActorSystem(passivate_after=passivate_after, mailbox_size=MAILBOX) as system:
        system.register("echo", Echo)
        keys = [f"echo-{i}" for i in range(n)]

        async def client(key: str) -> None:
            ask = system.ask
            for i in range(m):
                await ask("echo", key, i)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in keys))
        return time.perf_counter() - t0


async def actor_tell(n: int, m: int, passivate_after: float | None) -> float:
    async with ActorSystem(passivate_after=passivate_after, mailbox_size=MAILBOX) as system:
        system.register("ping", lambda key: Bouncer(key, "pong"))
        system.register("pong", lambda key: Bouncer(key, "ping"))
        loop = asyncio.get_running_loop()
        Bouncer.done = {f"b-{i}": loop.create_future() for i in range(n)}
        t0 = time.perf_counter()
        for key in Bouncer.done:
            await system.tell("ping", key, m)
        await asyncio.gather(*Bouncer.done.values())
        return time.perf_counter() - t0


# -- baseline: bare asyncio.Queue -------------------------------------------------------------------------------
async def queue_ask(n: int, m: int) -> float:
    async def server(q: asyncio.Queue[tuple[int, asyncio.Future[int]]]) -> None:
        while True:
            msg, fut = await q.get()
            if not fut.done():
                fut.set_result(msg + 1)

    queues: list[asyncio.Queue[tuple[int, asyncio.Future[int]]]] = [asyncio.Queue(MAILBOX) for _ in range(n)]
    servers = [asyncio.create_task(server(q)) for q in queues]
    loop = asyncio.get_running_loop()

    async def client(q: asyncio.Queue[tuple[int, asyncio.Future[int]]]) -> None:
        for i in range(m):
            fut: asyncio.Future[int] = loop.create_future()
            await q.put((i, fut))
            await fut

    t0 = time.perf_counter()
    await asyncio.gather(*(client(q) for q in queues))
    elapsed = time.perf_counter() - t0
    for s in servers:
        s.cancel()
    await asyncio.gather(*servers, return_exceptions=True)
    return elapsed


async def queue_tell(n: int, m: int) -> float:
    async def bouncer(inbox: asyncio.Queue[int], out: asyncio.Queue[int], done: asyncio.Future[None]) -> None:
        while True:
            msg = await inbox.get()
            if msg == 0:
                done.set_result(None)
                return
            await out.put(msg - 1)

    loop = asyncio.get_running_loop()
    tasks = []
    dones: list[asyncio.Future[None]] = []
    pings: list[asyncio.Queue[int]] = []
    for _ in range(n):
        a: asyncio.Queue[int] = asyncio.Queue(MAILBOX)
        b: asyncio.Queue[int] = asyncio.Queue(MAILBOX)
        done: asyncio.Future[None] = loop.create_future()
        tasks += [asyncio.create_task(bouncer(a, b, done)), asyncio.create_task(bouncer(b, a, done))]
        dones.append(done)
        pings.append(a)
    t0 = time.perf_counter()
    for q in pings:
        await q.put(m)
    await asyncio.gather(*dones)
    elapsed = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


# -- activation cost ---------------------------------------------------------------------------------------------
class Sink(Actor[int]):
    kind = "sink"
    handled = 0

    async def handle(self, msg: int) -> None:
        Sink.handled += 1


async def activations(count: int) -> dict[str, Any]:
    async with ActorSystem(passivate_after=0) as system:
        system.register("sink", Sink)
        keys = [f"daily/{i:08d}" for i in range(count)]  # built before timing: not the system's cost
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        tell = system.tell
        for key in keys:
            await tell("sink", key, 1)
        while system.active_count():  # noqa: ASYNC110 - polling is the point: no event to wait on
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        stats = system.stats()
        assert Sink.handled == count, Sink.handled
        assert stats.activations == count == stats.passivations, stats
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"seconds": elapsed, "peak_rss_mb": peak / 1024, "rss_before_mb": rss_before / 1024,
                "active_after": system.active_count()}


# -- driver ------------------------------------------------------------------------------------------------------
def measure(runs: int, configs: dict[str, Callable[[], Coroutine[Any, Any, float]]]) -> dict[str, float]:
    """Median seconds per configuration; the configurations take turns in each round, so load on a shared
    machine spreads over all of them instead of skewing one."""
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(runs):
        for name, make in configs.items():
            gc.collect()
            times[name].append(asyncio.run(make()))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, default=1000, help="N: actors (pairs for tell)")
    parser.add_argument("--pings", type=int, default=100, help="M: messages per actor")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--activations", type=int, default=1_000_000, help="0 skips the activation run")
    parser.add_argument("--activation-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.activation_child:
        print(json.dumps(asyncio.run(activations(args.activation_child))))
        return

    n, m, runs = args.actors, args.pings, args.runs
    print(f"python {sys.version.split()[0]}, N={n} actors, M={m} messages each, median of {runs} runs")
    passivation = {"on": 0.0, "off": None}
    configs: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
        "baseline ask": lambda: queue_ask(n, m),
        "baseline tell": lambda: queue_tell(n, m),
    }
    for label, pa in passivation.items():
        configs[f"ask {label}"] = lambda pa=pa: actor_ask(n, m, pa)  # type: ignore[misc]
        configs[f"tell {label}"] = lambda pa=pa: actor_tell(n, m, pa)  # type: ignore[misc]
    med = measure(runs, configs)
    msgs = n * m
    actor_time = base_time = 0.0
    actor_msgs = 0
    for label, pa in passivation.items():
        for mode in ("ask", "tell"):
            t, bt = med[f"{mode} {label}"], med[f"baseline {mode}"]
            print(f"{mode:4}  passivation {label:3} (passivate_after={pa})  actors {msgs / t:>10,.0f} msg/s   "
                  f"asyncio.Queue {msgs / bt:>10,.0f} msg/s   ratio {bt / t:.2f}")
            actor_time += t
            base_time += bt
            actor_msgs += msgs

    if args.activations:
        out = subprocess.run([sys.executable, __file__, "--activation-child", str(args.activations)],
                             check=True, capture_output=True, text=True).stdout
        act = json.loads(out.strip().splitlines()[-1])
        print(f"activation: {args.activations:,} activations+passivations (one tell to each key, "
              f"passivate_after=0) in {act['seconds']:.2f} s = {args.activations / act['seconds']:,.0f}/s; "
              f"peak RSS {act['peak_rss_mb']:.0f} MB (of which {act['rss_before_mb']:.0f} MB before the first "
              f"tell: interpreter + the key strings), active after: {act['active_after']}")

    actor_rate = actor_msgs / actor_time
    base_rate = actor_msgs / base_time
    print(f"ratio={actor_rate / base_rate:.2f} actor_msgs_per_s={actor_rate:.0f} baseline_msgs_per_s={base_rate:.0f}")


if __name__ == "__main__":
    main()
