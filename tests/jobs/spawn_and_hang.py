"""A job that starts a child in its process group and hangs, unless the file argv[1] exists (then it exits 0).

Prints ``{"pids": [its own pid, the child's pid]}`` (a plain output line, not a protocol line) first.
"""

import json
import os
import subprocess
import sys
import time

if os.path.exists(sys.argv[1]):
    sys.exit(0)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
print(json.dumps({"pids": [os.getpid(), child.pid]}), flush=True)
time.sleep(1000)
