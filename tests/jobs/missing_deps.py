"""Reports missing upstream partitions and exits 1.

For each partition ``daily/<x>`` it needs ``raw/<x>``. ``--line TEXT`` prints TEXT instead (a malformed report).
"""

import json
import sys

args = sys.argv[1:]
if args[:1] == ["--line"]:
    print(args[1])
else:
    print("looking for inputs")
    print(json.dumps({"missing_deps": ["raw/" + ref.split("/", 1)[1] for ref in args]}))
sys.exit(1)
