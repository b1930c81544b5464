"""Succeeds: prints what it was given (args and WANTBUILD_* env) as one JSON line, a heartbeat, and some output."""

import json
import os
import sys

print(json.dumps({
    "args": sys.argv[1:],
    "job_run_id": os.environ.get("WANTBUILD_JOB_RUN_ID"),
    "job": os.environ.get("WANTBUILD_JOB"),
    "attempt": os.environ.get("WANTBUILD_ATTEMPT"),
}))
print('{"heartbeat": true}')
print("hello stdout")
print("hello stderr", file=sys.stderr)
