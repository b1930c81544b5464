"""Fails: says why on stderr and exits 3."""

import sys

print("cannot build", *sys.argv[1:], file=sys.stderr)
sys.exit(3)
