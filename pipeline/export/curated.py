"""Reading the run: the kept keys of the chosen stage and their score rows."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import SUCCESS, committed_parquet, is_complete, read_parquet, sql_quote
from photogenic.pipeline.core.storage import duckdb_location, register_filesystems

class ExportError(ValueError):
    """The run directory cannot be exported; the message says what is missing."""


def _read_tables(files) -> pa.Table | None:
    if not files:
        return None
    return pa.concat_tables([read_parquet(f) for f in files], promote_options="permissive")


def load_curated(run: RunDir, stage: str) -> tuple[pa.Table, dict[str, Any]]:
    """The kept rows of `stage` (candidates or a review pass: key + decision columns) and how
    many were read and kept. `export_run` has checked `stage` against the configured passes."""
    directory = run.stage_dir(stage)
    if directory.exists() and not is_complete(directory):
        raise ExportError(f"{directory} is unfinished (no {SUCCESS} marker): let its stage "
                          "finish or rerun it before exporting")
    if stage == "candidates":
        table = _read_tables(committed_parquet(directory))
        if table is None:
            raise ExportError(f"no candidates in {directory}: run `photogenic select` first")
        return _dedup(table.select(["key"])), {"read": table.num_rows, "kept": table.num_rows}
    path = run.decisions(stage)
    if not path.exists():
        raise ExportError(
            f"{path} not found: run `photogenic review pull --pass {stage[-1]}` first "
            f"(or export --from candidates)"
        )
    table = read_parquet(path)
    missing = {"key", "keep"} - set(table.column_names)
    if missing:
        raise ExportError(f"{path} lacks column(s) {sorted(missing)}")
    kept = table.filter(table.column("keep").fill_null(False))
    return _dedup(kept), {"read": table.num_rows, "kept": kept.num_rows}


def _dedup(table: pa.Table) -> pa.Table:
    # One decision per key is the contract; if a pull ever repeats one, keep its first row.
    seen: set[str] = set()
    rows = []
    for i, key in enumerate(table.column("key").to_pylist()):
        if key is not None and key not in seen:
            seen.add(key)
            rows.append(i)
    return table.take(pa.array(rows, pa.int64())) if len(rows) != table.num_rows else table


def load_score_rows(run: RunDir, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Score rows for `keys`: from candidates, falling back to the full scores table."""
    import duckdb

    found: dict[str, dict[str, Any]] = {}
    con = duckdb.connect()
    for directory in (run.candidates, run.scores):
        files = committed_parquet(directory)
        wanted = [k for k in keys if k not in found]
        if not files or not wanted:
            continue
        con.register("wanted", pa.table({"key": pa.array(wanted, pa.string())}))
        register_filesystems(con, files)
        listing = "[" + ", ".join(sql_quote(duckdb_location(f)) for f in files) + "]"
        rows = con.sql(
            f"SELECT t.* FROM read_parquet({listing}, union_by_name=true) t "
            "JOIN wanted w USING (key)"
        ).to_arrow_table()
        con.unregister("wanted")
        for row in rows.to_pylist():
            found.setdefault(row["key"], row)
    return found
