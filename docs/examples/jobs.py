"""The command jobs of docs/examples/graph.toml: ``python3 jobs.py JOB REF...`` (the job protocol).

Each job writes one small file per partition under ``$WANTBUILD_DATA`` (default ``./tour-data``). An input
whose file is missing is reported as a missing dependency: one line ``{"missing_deps": [...]}`` on stdout and a
non-zero exit; the supervisor builds those partitions first and runs the job again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("WANTBUILD_DATA", "tour-data"))
WORK_SECONDS = float(os.environ.get("WANTBUILD_WORK_SECONDS", "0.02"))


def path_of(ref: str) -> Path:
    return DATA / (ref.replace("/", "__") + ".txt")


def inputs(job: str, ref: str) -> list[str]:
    key = ref.split("/", 1)[1]
    if job == "daily":
        return [f"raw/{key}"]
    if job == "weekly":
        start = dt.date.fromisoformat(key)
        return [f"daily/{start + dt.timedelta(days=i)}" for i in range(7)]
    return []


def main(job: str, refs: list[str]) -> int:
    missing = [dep for ref in refs for dep in inputs(job, ref) if not path_of(dep).exists()]
    if missing:
        print(json.dumps({"missing_deps": sorted(set(missing))}), flush=True)
        return 3
    DATA.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        time.sleep(WORK_SECONDS)
        print(json.dumps({"heartbeat": True}), flush=True)
        tmp = path_of(ref).with_suffix(".tmp")
        tmp.write_text(f"{job} output for {ref}, run {os.environ.get('WANTBUILD_JOB_RUN_ID')}\n")
        tmp.replace(path_of(ref))
        print(f"built {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
