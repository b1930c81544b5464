"""Open a log the ways a user without write access would, and print what happened as one JSON line.

Usage: ``python read_only_probe.py LOG_PATH``. The read-only tests run it with file permissions enforced
(as an unprivileged user, or as root without the capabilities that bypass them).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import structlog

from eventlog import EventLog
from eventlog_helpers import REGISTRY


def can_write_folder(path: str) -> bool:
    """Whether this process may create a file beside the log (the probe's proof that permissions apply)."""
    try:
        with open(os.path.join(os.path.dirname(path), "probe-file"), "w"):
            return True
    except OSError:
        return False


async def probe(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"can_write_folder": can_write_folder(path)}
    try:
        async with EventLog.open(path, writer=False, registry=REGISTRY) as log:
            out["read_only"] = log.read_only
            out["seqs"] = [r.seq async for r in log.read()]
            out["verify_ok"] = (await log.verify()).ok
            try:
                await log.submit_command("want", {"refs": ["a/1"]})
                out["submit"] = "ok"
            except Exception as e:
                out["submit"] = f"{type(e).__name__}: {e}"
    except Exception as e:
        out["reader"] = f"{type(e).__name__}: {e}"
    try:
        async with EventLog.open(path, registry=REGISTRY):
            out["writer"] = "ok"
    except Exception as e:
        out["writer"] = f"{type(e).__name__}: {e}"
    return out


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    print(json.dumps(asyncio.run(probe(sys.argv[1]))))
