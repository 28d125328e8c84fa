"""Fingerprints of the filter, select and export outputs of a run, for the no-behaviour-change test.

Paths differ between machines and sessions (the pool lives under a temp dir), so `source` and
`shard` are dropped; everything else is hashed row by row, in key order, floats rounded to 5
decimals (model scores differ in the last bits between CPUs: the same code gave two exact-repr
digests on two machines). Regenerate the stored baseline only when a change is meant to alter outputs:
`python -m tests.golden RUN > tests/data/golden_sample_pool.json`.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

PATH_FIELDS = {"source", "shard"}
# Columns added after the baseline was recorded (issue 15: the head blend); null / equal to
# engagement without a head, so they carry no behaviour of their own here.
ADDED_FIELDS = {"head_score", "rank_score"}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _rows_digest(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: str(r.get("key"))):
        clean = {k: _rounded(v) for k, v in row.items() if k not in PATH_FIELDS and k not in ADDED_FIELDS}
        h.update(json.dumps(clean, sort_keys=True, default=repr).encode() + b"\n")
    return h.hexdigest()


def _table_rows(directory: Path) -> list[dict]:
    rows = []
    for f in sorted(directory.glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _tar_digest(path: Path) -> str:
    h = hashlib.sha256()
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name.endswith(".json"):
                record = {k: _rounded(v) for k, v in json.loads(data).items() if k not in PATH_FIELDS and k not in ADDED_FIELDS}
                data = json.dumps(record, sort_keys=True).encode()
            h.update(member.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def fingerprint(run: Path, export: Path) -> dict:
    funnel = json.loads((run / "scores" / "_funnel.json").read_text())
    select = json.loads((run / "candidates" / "_summary.json").read_text())
    select = select.get("details", select)  # the one stage-summary shape keeps select's own counts there
    dropped = _table_rows(run / "candidates" / "_dropped")
    exported = {}
    for p in sorted(export.rglob("*")):
        rel = str(p.relative_to(export))
        if not p.is_file() or p.name in ("lineage.json", "_SUCCESS", "_summary.json"):
            continue
        if p.suffix == ".tar":
            exported[rel] = _tar_digest(p)
        elif p.suffix == ".parquet":
            exported[rel] = _rows_digest(pq.read_table(p).to_pylist())
        else:
            exported[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    lineage = json.loads((export / "lineage.json").read_text())
    return {
        "filter": {
            "rows_in": funnel["rows_in"],
            "passed": funnel["passed"],
            "reject_reasons": funnel["reject_reasons"],
            "scores": _rows_digest(_table_rows(run / "scores")),
        },
        "select": {
            "counts": {k: v for k, v in select.items() if k not in ("engine",) and not isinstance(v, float)
                       and not (k == "head" and v is None)},
            "candidates": _rows_digest(_table_rows(run / "candidates")),
            "dropped": _rows_digest(dropped),
        },
        "export": {"counts": lineage["counts"], "files": exported},
    }


if __name__ == "__main__":
    run = Path(sys.argv[1])
    print(json.dumps(fingerprint(run, run / "export"), indent=2, sort_keys=True))
