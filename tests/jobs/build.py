"""A command job for the runtime tests: builds each partition ref given as an argument by writing a marker file.

--data DIR        where marker files live (one per ref)
--needs TEMPLATE  an upstream ref per partition, e.g. "raw/{last}" ({last} = the ref's last segment); if its
                  marker is missing, report it with the missing_deps protocol line and exit 1
--fail-first      fail (exit 2) the first time each ref is attempted (state kept in DIR)
--sleep S         sleep S seconds before building
"""

import argparse
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--needs")
p.add_argument("--fail-first", action="store_true")
p.add_argument("--sleep", type=float, default=0.0)
args, refs = p.parse_known_args()
os.makedirs(args.data, exist_ok=True)


def marker(ref: str) -> str:
    return os.path.join(args.data, ref.replace("/", "__"))


if args.needs:
    missing = [args.needs.format(last=r.rsplit("/", 1)[1]) for r in refs]
    missing = [m for m in missing if not os.path.exists(marker(m))]
    if missing:
        print(json.dumps({"missing_deps": missing}), flush=True)
        sys.exit(1)
if args.fail_first:
    for r in refs:
        flag = marker(r) + ".failed-once"
        if not os.path.exists(flag):
            open(flag, "w").close()
            print(f"transient failure building {r}", file=sys.stderr)
            sys.exit(2)
time.sleep(args.sleep)
for r in refs:
    with open(marker(r), "w") as f:
        f.write(f"built by {os.environ['WANTBUILD_JOB_RUN_ID']}\n")
print("built", *refs)
