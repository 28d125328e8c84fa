"""What the selection plan needs from an engine: a handful of table operations over SQL, and the
few SQL spellings that differ between engines. DuckDB (duckdb.py) and Spark (spark.py) implement
it; the plan (plan.py) only ever sees this protocol, so engines never import the plan."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa


class Dialect(Protocol):
    name: str

    def xor(self, a: str, b: str) -> str: ...

    def shift_right(self, a: str, n: int) -> str: ...

    def hash60(self, expr: str) -> str:
        """A seeded-hash integer in [0, 2^60): the first 15 hex digits of md5(expr)."""
        ...

    def hash64(self, expr: str) -> str:
        """A fast 64-bit hash of a value, for grouping before an exact check: engines may differ
        in its values, never in what the plan computes from it."""
        ...

    def quota_thresholds(self, rows: str, limits: str, max_quota: int) -> str:
        """(concept, quota, threshold) for each concept of `limits` with quota > 0: the quota-th
        largest rank_score of `rows` in that concept; `max_quota` bounds every quota."""
        ...


class Engine(Protocol):
    """Tables live inside the engine; only small results (`fetch`) come back as Arrow. The score
    rows are visible as the table `scores` from construction on."""

    dialect: Dialect

    def materialize(self, name: str, sql: str) -> None:
        """Computes `sql` once into the table `name` (replacing it)."""
        ...

    def view(self, name: str, sql: str) -> None:
        """Names `sql` as `name`, recomputed wherever it is read."""
        ...

    def drop(self, name: str) -> None: ...

    def fetch(self, sql: str) -> pa.Table: ...

    def register(self, name: str, table: pa.Table) -> None:
        """Makes an Arrow table computed by the plan readable as `name`."""
        ...

    def write_parquet(self, sql: str, directory: Path, schema: pa.Schema) -> None:
        """Writes the rows of `sql` as parquet files under `directory`, columns cast to strings."""
        ...

    def close(self) -> None: ...
