"""A command job that writes ``DIR/<WANTBUILD_JOB_RUN_ID>.pid`` (its pid) and sleeps.

--dir DIR        where the pid file goes
--seconds S      how long to sleep (default 60)
--ignore-term    ignore SIGTERM (a job slow to stop: only SIGKILL ends it)
"""

import argparse
import os
import signal
import time

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--seconds", type=float, default=60.0)
p.add_argument("--ignore-term", action="store_true")
args, _refs = p.parse_known_args()
if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.makedirs(args.dir, exist_ok=True)
path = os.path.join(args.dir, os.environ["WANTBUILD_JOB_RUN_ID"] + ".pid")
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(path + ".tmp", path)
time.sleep(args.seconds)
