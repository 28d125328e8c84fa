"""manifest.parquet: one row per exported image, whatever the formats (always written)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.pipeline.export.samples import SPLITS, Sample, json_default

MANIFEST = "manifest.parquet"


class Manifest:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, sample: Sample, located: dict[str, dict[str, Any]]) -> None:
        """`located`: format name -> the columns its writer returned for this sample."""
        record = sample.record
        row = {k: v for k, v in record.items() if k not in ("decision", "export")}
        row.update({f"decision_{k}": v for k, v in record["decision"].items()})
        row.update({"split": sample.split, "text": sample.text})
        # Grouped by format name, so the columns do not depend on the order formats are listed.
        for name in sorted(located):
            row.update(located[name])
        row.update({"image_sha256": hashlib.sha256(sample.data).hexdigest(),
                    "image_bytes": len(sample.data)})
        # Nested decision values (lists, dicts) become JSON strings: a flat parquet schema.
        self.rows.append({k: json.dumps(v, sort_keys=True, default=json_default)
                          if isinstance(v, (dict, list)) else v for k, v in row.items()})

    def write(self, root: Path) -> Path:
        # from_pylist takes its columns from the first row; rows from candidates and from
        # scores differ (candidates add engagement, dup_group, ...), so name the union.
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in self.rows])
        path = root / MANIFEST
        pq.write_table(table, path)
        return path

    def split_counts(self) -> dict[str, int]:
        return {sp: sum(1 for r in self.rows if r["split"] == sp) for sp in SPLITS}

    def __len__(self) -> int:
        return len(self.rows)
