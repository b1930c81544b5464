"""Prints ``--beats N`` heartbeat lines every ``--interval S`` seconds; then exits 0, or with ``--then-hang``
goes silent and sleeps."""

import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--beats", type=int, required=True)
parser.add_argument("--interval", type=float, required=True)
parser.add_argument("--then-hang", action="store_true")
args, _partitions = parser.parse_known_args()
for _ in range(args.beats):
    print('{"heartbeat": true}', flush=True)
    time.sleep(args.interval)
if args.then_hang:
    time.sleep(1000)
print("done")
