"""DuckDB engine of `photogenic select`: in-memory tables that spill to a scratch dir."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from photogenic.pipeline.core.config import SelectConfig
from photogenic.pipeline.core.runio import sql_quote
from photogenic.pipeline.core.storage import duckdb_location, register_filesystems


class DuckDBDialect:
    name = "duckdb"

    def xor(self, a: str, b: str) -> str:
        return f"xor({a}, {b})"

    def shift_right(self, a: str, n: int) -> str:
        return f"({a} >> {n})"

    def hash60(self, expr: str) -> str:
        return f"CAST(concat('0x', substr(md5({expr}), 1, 15)) AS BIGINT)"

    def hash64(self, expr: str) -> str:
        return f"hash({expr})"

    def quota_thresholds(self, rows: str, limits: str, max_quota: int) -> str:
        # max(x, n): the n largest values per group (a bounded heap), largest first.
        return f"""
            SELECT l.concept, l.quota, list_extract(t.top, CAST(l.quota AS BIGINT)) AS threshold
            FROM {limits} l JOIN (SELECT concept, max(rank_score, {int(max_quota)}) AS top FROM {rows} GROUP BY concept) t
            ON l.concept = t.concept WHERE l.quota > 0"""


class DuckDBEngine:
    """Tables are kept in memory and spill to `scratch` past memory_limit: out-of-core without
    the write-ahead log and checkpoints of an on-disk database."""

    dialect = DuckDBDialect()

    def __init__(self, files: list[Path], cfg: SelectConfig, scratch: Path):
        import duckdb

        scratch.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = {sql_quote(cfg.memory_limit)}")
        self.con.execute(f"SET temp_directory = {sql_quote(scratch / 'spill')}")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")  # no bar in select's output
        if cfg.threads:
            self.con.execute(f"SET threads = {int(cfg.threads)}")
        register_filesystems(self.con, files)  # parts on a store: read through fsspec, no httpfs
        paths = ", ".join(sql_quote(duckdb_location(p)) for p in files)
        self.con.execute(f"CREATE VIEW scores AS SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        self._arrow: dict[str, pa.Table] = {}

    def materialize(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")

    def view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def fetch(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def register(self, name: str, table: pa.Table) -> None:
        self._arrow[name] = table  # keep it alive while DuckDB scans it
        self.con.register(f"{name}_arrow", table)
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {name}_arrow")

    def write_parquet(self, sql: str, directory: Path, schema: pa.Schema) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        casts = ", ".join(f"CAST({f.name} AS VARCHAR) AS {f.name}" for f in schema)
        target = sql_quote(directory / "part-00000.parquet")
        # Unordered, as Spark writes it: sorting the audit (every row not selected) by key would
        # cost more than writing it. Readers sort if they need an order.
        self.con.execute(f"COPY (SELECT {casts} FROM ({sql})) TO {target} (FORMAT parquet)")

    def close(self) -> None:
        self.con.close()
