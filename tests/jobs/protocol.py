"""Prints the protocol lines it is given, then exits: ``protocol.py CODE LINE... -- REF...``.

Each LINE is printed as is (flushed); the refs the runtime appends after ``--`` are ignored; the exit status is
CODE.
"""

import sys

code, *rest = sys.argv[1:]
lines = rest[: rest.index("--")] if "--" in rest else rest
for line in lines:
    print(line, flush=True)
sys.exit(int(code))
