"""Hangs: starts a shell that runs ``sleep 1000 &`` and waits, prints ``pid N`` for itself, the shell and the sleep,
then sleeps. ``--ignore-term`` makes the job itself (not its children) ignore SIGTERM."""

import os
import signal
import subprocess
import sys
import time

print(f"pid {os.getpid()}", flush=True)
shell = subprocess.Popen(["sh", "-c", 'sleep 1000 & echo "pid $!"; wait'])
print(f"pid {shell.pid}", flush=True)
if "--ignore-term" in sys.argv[1:]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(1000)
