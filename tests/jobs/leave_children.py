"""Exits 0 at once, leaving ``sleep 1000`` running in its process group (holding stdout open); prints its pid."""

import subprocess

subprocess.run(["sh", "-c", 'sleep 1000 & echo "pid $!"'], check=True)
print("done", flush=True)
