"""Fails the first time, succeeds afterwards: the state is a file named by $FLAKY_STATE."""

import os
import sys

state = os.environ["FLAKY_STATE"]
if not os.path.exists(state):
    with open(state, "w") as f:
        f.write("failed once\n")
    print("transient failure", file=sys.stderr)
    sys.exit(1)
print("built", *sys.argv[1:])
