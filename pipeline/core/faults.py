"""Failpoints for fault drills: `PHOTOGENIC_FAILPOINT=name[:n]` SIGKILLs the process the n-th
time (default 1st) execution passes `failpoint(name)`. A real SIGKILL at a known point, so the
drills in tests/test_fault_drills.py land mid-stage every time; a no-op otherwise.
`PHOTOGENIC_SLOWPOINT=name:seconds` instead sleeps there every time, holding a stage at that point
long enough for a drill to break something under it (a store that goes away mid-job)."""
from __future__ import annotations

import os
import signal
import time

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    slow = os.environ.get("PHOTOGENIC_SLOWPOINT")
    if slow and slow.partition(":")[0] == name:
        time.sleep(float(slow.partition(":")[2] or 1))
    spec = os.environ.get("PHOTOGENIC_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
