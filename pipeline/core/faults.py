"""Failpoints for fault drills: `PHOTOGENIC_FAILPOINT=name[:n]` SIGKILLs the process the n-th
time (default 1st) execution passes `failpoint(name)`. A real SIGKILL at a known point, so the
drills in tests/test_fault_drills.py land mid-stage every time; a no-op otherwise."""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("PHOTOGENIC_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
