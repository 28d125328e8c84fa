"""One summary shape, written by every stage as `_summary.json` next to its output.

    {"stage": "select", "input_fingerprint": "...", "counts": {"in": N, "out": M,
     "by_reason": {...}}, "seconds": 1.2, "config": {...}, "details": {...}}

Resume, incremental runs and the report read summaries through `read_summary` (or `read_details`
for a stage's own part), never a stage's private files. `details` holds what only that stage has
(select's per-concept quotas, ...). `seconds` is null where reruns must write identical files
(select keeps its timings in run_select's return value).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import read_json, write_json_atomic


@dataclass
class StageSummary:
    stage: str
    input_fingerprint: str
    rows_in: int
    rows_out: int
    by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "stage": d["stage"],
            "input_fingerprint": d["input_fingerprint"],
            "counts": {"in": d["rows_in"], "out": d["rows_out"], "by_reason": d["by_reason"]},
            "seconds": d["seconds"],
            "config": d["config"],
            "details": d["details"],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "StageSummary":
        counts = d.get("counts") or {}
        return cls(stage=d["stage"], input_fingerprint=d.get("input_fingerprint", ""),
                   rows_in=counts.get("in", 0), rows_out=counts.get("out", 0),
                   by_reason=counts.get("by_reason") or {}, seconds=d.get("seconds"),
                   config=d.get("config") or {}, details=d.get("details") or {})


def fingerprint(*parts: Any) -> str:
    """A stable digest of JSON-able parts (file lists with sizes, config sections, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_summary(directory: str | Path, summary: StageSummary) -> Path:
    return write_json_atomic(summary.to_json(), RunDir.summary(directory))


def read_summary(directory: str | Path) -> StageSummary | None:
    """The stage summary in `directory`, or None when the stage has not written one."""
    data = read_json(RunDir.summary(directory))
    if not isinstance(data, dict) or "stage" not in data or "counts" not in data:
        return None
    return StageSummary.from_json(data)


def read_details(directory: str | Path) -> dict[str, Any]:
    """The stage's own summary (`details`) in `directory`; {} when there is none. A summary
    written before the one shape (select's dict at the top level) reads as its details."""
    summary = read_summary(directory)
    if summary is not None:
        return summary.details
    data = read_json(RunDir.summary(directory))
    return data if isinstance(data, dict) else {}
