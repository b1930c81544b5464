"""Runs a runtime on argv[1] whose job raw/{d} is tests/jobs/spawn_and_hang.py (release file argv[2]); wants raw/x,
prints the job's pids as JSON once the job runs, then keeps running until the test SIGKILLs it.

``--no-attach`` makes every commit of JobRunAttached fail (a runtime killed between the job's fork and that
commit): the log then never names the job's process."""

import json
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supervisor import Graph, Job, open_runtime  # noqa: E402

JOBS = Path(__file__).resolve().parent


def graph(release: str) -> Graph:
    g = Graph("fence")
    g.add_job(Job.create("raw", outputs="raw/{d}", command=(sys.executable, str(JOBS / "spawn_and_hang.py"), release)))
    return g


async def main() -> None:
    faults = None
    if "--no-attach" in sys.argv:
        from actors import Faults

        faults = Faults()
        faults.add("commit", "job_run", "JobRunAttached", times=1_000_000)
    async with open_runtime(sys.argv[1], graph(sys.argv[2]), faults=faults) as rt:
        await rt.want("raw/x")
        while True:
            runs = [r for r in rt.runs() if r.stdout_path and (r.handle or faults is not None)]
            if runs:
                text = Path(runs[0].stdout_path or "").read_text()
                if text.strip():
                    print(json.dumps({"run": runs[0].job_run_id, **json.loads(text.splitlines()[0])}), flush=True)
                    break
            await anyio.sleep(0.02)
        await anyio.sleep(1000)


if __name__ == "__main__":
    anyio.run(main)
