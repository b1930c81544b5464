"""Scenario runner speed: the bundled catalog, and days of simulated job time, in wall seconds.

Timed: ``run_scenario`` on every catalog scenario (``--repeat`` times, median per scenario), then a generated
scenario with ``--days`` days of hourly partitions built four at a time by an ingest job (one hour of virtual
job time per partition) and a daily rollup per day that discovers its 24 hourlies as missing dependencies.

Run: ``python bench/scenarios_catalog.py --repeat 3 --days 7``. The last line is
``catalog_s=... days=... job_hours=... events=... wall_s=... virtual_per_wall=...``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import time

import structlog

from scenarios import catalog, load_scenario, parse_scenario, run_scenario


def days_scenario(days: int) -> str:
    start = dt.date(2026, 11, 1)
    dates = [(start + dt.timedelta(days=i)).isoformat() for i in range(days)]
    missing = ", ".join(f'"hourly/{{date}}T{h:02d}"' for h in range(24))
    refs = ", ".join(f'"daily/{d}"' for d in dates)
    return f"""
[scenario]
name = "bench-days"
[job.ingest]
outputs = "hourly/{{date}}T{{hour}}"
concurrency = 4
duration = 3600
heartbeat_timeout = 600
[job.rollup]
outputs = "daily/{{date}}"
behaviour = "missing_deps"
missing = [{missing}]
duration = 1800
[[timeline]]
at = 0
action = "want"
name = "days"
refs = [{refs}]
[expect.wants]
days = "Successful"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--days", type=int, default=7)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    total = 0.0
    for entry in catalog():
        sc = load_scenario(entry.path)
        times = []
        for _ in range(args.repeat):
            r = run_scenario(sc)
            assert r.ok, f"{entry.name} failed"
            times.append(r.wall_seconds)
        med = statistics.median(times)
        total += med
        print(f"{entry.name:<44} {med * 1000:8.1f} ms  {len(r.events):5d} events  virtual {r.end_time:>8g} s")

    sc = parse_scenario(days_scenario(args.days), "bench-days.toml")
    t = time.perf_counter()
    r = run_scenario(sc)
    wall = time.perf_counter() - t
    assert r.ok, [c for c in r.checks if not c.ok]
    job_hours = sum((x.worked_until or 0) - (x.started_at or 0) for x in r.runs if x.started_at is not None) / 3600
    print(f"catalog_s={total:.3f} days={args.days} job_hours={job_hours:.0f} events={len(r.events)} "
          f"wall_s={wall:.2f} virtual_per_wall={r.end_time / wall:.0f}")


if __name__ == "__main__":
    main()
