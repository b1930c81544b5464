"""The crash drill's command job (bench/chaos.py): builds partitions, checks itself for overlapping writers.

    job.py --data DIR --tag TAG --seed S --min-s A --max-s B [--slow-p P --slow-s C] [--flaky P] KIND REF...

KIND is the job: ``raw/{i}`` needs nothing, ``clean/{i}`` needs ``raw/{i}`` (and is the flaky one),
``daily/{i}`` needs ``clean/{i}``, ``weekly/{k}`` needs ``daily/{3k}``, ``daily/{3k+1}``, ``daily/{3k+2}``.
An upstream partition counts as built when its output file exists; missing ones are reported with the
``missing_deps`` protocol line (exit 3). ``--tag`` is only there so the drill can find job processes in /proc.

Each output ``DIR/out/<ref>.json`` is written while holding an exclusive ``flock`` on ``DIR/locks/<ref>``
(released by the kernel when the process dies, so a killed job leaves no stale lock). A job that finds the
lock taken records the overlap in ``DIR/overlaps.jsonl`` (who it found holding it) and writes anyway, as a
job without such a lock would: the lock only detects, so a late writer can still overwrite a newer output.
The output says which run wrote it (``WANTBUILD_JOB_RUN_ID``) and from which runtime incarnation
(``CHAOS_INCARNATION``, set by the drill on the runtime); every publish is also appended to
``DIR/publishes.jsonl``. The whole run takes a random time between ``--min-s`` and ``--max-s`` seconds, and
``--slow-s`` more with probability ``--slow-p`` (a few slow runs, so that kills find jobs in flight).
"""

import argparse
import fcntl
import json
import os
import random
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--tag", required=True)
p.add_argument("--seed", default="0")
p.add_argument("--min-s", type=float, default=0.05)
p.add_argument("--max-s", type=float, default=3.0)
p.add_argument("--flaky", type=float, default=0.0, help="probability that a run fails")
p.add_argument("--slow-p", type=float, default=0.0, help="probability that a run takes --slow-s seconds more")
p.add_argument("--slow-s", type=float, default=0.0)
p.add_argument("kind")
p.add_argument("refs", nargs="+")
args = p.parse_args()

RUN = os.environ["WANTBUILD_JOB_RUN_ID"]
INCARNATION = os.environ.get("CHAOS_INCARNATION", "?")
rng = random.Random(f"{args.seed}:{RUN}:{os.environ.get('WANTBUILD_ATTEMPT', '1')}")
out_dir = os.path.join(args.data, "out")
lock_dir = os.path.join(args.data, "locks")
os.makedirs(out_dir, exist_ok=True)
os.makedirs(lock_dir, exist_ok=True)


def file_of(ref: str) -> str:
    return ref.replace("/", "__")


def output(ref: str) -> str:
    return os.path.join(out_dir, file_of(ref) + ".json")


def append(name: str, record: dict[str, object]) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(os.path.join(args.data, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of a short line to an O_APPEND file: lines never interleave
    finally:
        os.close(fd)


def needs(ref: str) -> list[str]:
    i = int(ref.split("/")[1])
    if args.kind == "clean":
        return [f"raw/{i}"]
    if args.kind == "daily":
        return [f"clean/{i}"]
    if args.kind == "weekly":
        return [f"daily/{3 * i + d}" for d in range(3)]
    return []


missing = [d for r in args.refs for d in needs(r) if not os.path.exists(output(d))]
if missing:
    print(json.dumps({"missing_deps": sorted(set(missing))}), flush=True)
    sys.exit(3)

budget = (rng.uniform(args.min_s, args.max_s) + (args.slow_s if rng.random() < args.slow_p else 0.0)) / len(args.refs)
fail_at = rng.randrange(len(args.refs) + 1) if rng.random() < args.flaky else None
for n, ref in enumerate(args.refs):
    if n == fail_at:
        print(f"flaky failure before {ref}", file=sys.stderr)
        sys.exit(1)
    fd = os.open(os.path.join(lock_dir, file_of(ref)), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except BlockingIOError:  # another process is writing this output right now: record it, write anyway
        locked = False
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        append("overlaps.jsonl", {"ref": ref, "run": RUN, "pid": os.getpid(), "incarnation": INCARNATION,
                                  "holder": holder, "at": time.time()})
    if locked:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"run": RUN, "pid": os.getpid(), "incarnation": INCARNATION}).encode(), 0)
    started = time.time()
    tmp = f"{output(ref)}.{RUN}.tmp"
    with open(tmp, "w") as f:
        json.dump({"ref": ref, "job_run_id": RUN, "incarnation": INCARNATION, "pid": os.getpid(),
                   "attempt": os.environ.get("WANTBUILD_ATTEMPT")}, f)
    time.sleep(budget)
    os.replace(tmp, output(ref))  # atomic publish
    append("publishes.jsonl", {"ref": ref, "run": RUN, "pid": os.getpid(), "incarnation": INCARNATION,
                               "started": started, "ended": time.time()})
    if locked:
        os.ftruncate(fd, 0)
    os.close(fd)  # releases the lock
print("built", *args.refs, flush=True)
