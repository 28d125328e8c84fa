"""Spark engine of `photogenic select`: the same SQL as DuckDB (selection/sql.py) via spark.sql."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from photogenic.pipeline.core.config import Config


class SparkDialect:
    name = "spark"

    def xor(self, a: str, b: str) -> str:
        return f"({a} ^ {b})"

    def shift_right(self, a: str, n: int) -> str:
        return f"shiftright({a}, {n})"

    def hash60(self, expr: str) -> str:
        return f"CAST(conv(substr(md5({expr}), 1, 15), 16, 10) AS BIGINT)"

    def hash64(self, expr: str) -> str:
        return f"xxhash64({expr})"

    def quota_thresholds(self, rows: str, limits: str, max_quota: int) -> str:
        # row_number() <= constant right above the window: Spark's per-partition top-k
        # (WindowGroupLimit) before the shuffle.
        return f"""
            SELECT l.concept, l.quota, min(t.rank_score) AS threshold
            FROM {limits} l JOIN (
                SELECT * FROM (SELECT concept, rank_score,
                                      row_number() OVER (PARTITION BY concept ORDER BY rank_score DESC) AS rn
                               FROM {rows}) w
                WHERE rn <= {int(max_quota)}) t
            ON l.concept = t.concept AND t.rn <= l.quota
            WHERE l.quota > 0 GROUP BY l.concept, l.quota"""


class SparkEngine:
    dialect = SparkDialect()

    def __init__(self, files: list[Path], config: Config, master: str | None, conf: dict[str, str] | None):
        from photogenic.pipeline.core.spark import get_spark

        self.spark = get_spark(config, master, conf)
        self._frames = {}
        # Spark's default of 200 shuffle partitions makes thousands of tiny tasks here; scale
        # with the cluster instead, unless the user chose a value. Restored on close.
        self._saved_partitions = None
        if "spark.sql.shuffle.partitions" not in {**config.spark.conf, **(conf or {})}:
            self._saved_partitions = self.spark.conf.get("spark.sql.shuffle.partitions")
            parallelism = self.spark.sparkContext.defaultParallelism
            self.spark.conf.set("spark.sql.shuffle.partitions", str(max(4, 2 * parallelism)))
        scores = self.spark.read.parquet(*[str(p.resolve()) for p in files])
        scores.createOrReplaceTempView("scores")

    def materialize(self, name: str, sql: str) -> None:
        from pyspark import StorageLevel

        self.drop(name)
        frame = self.spark.sql(sql).persist(StorageLevel.MEMORY_AND_DISK)
        frame.createOrReplaceTempView(name)
        self._frames[name] = frame

    def view(self, name: str, sql: str) -> None:
        self.drop(name)
        self.spark.sql(sql).createOrReplaceTempView(name)

    def drop(self, name: str) -> None:
        frame = self._frames.pop(name, None)
        if frame is not None:
            frame.unpersist()
        self.spark.catalog.dropTempView(name)

    def fetch(self, sql: str) -> pa.Table:
        return self.spark.sql(sql).toArrow()

    def register(self, name: str, table: pa.Table) -> None:
        self.drop(name)
        frame = self.spark.createDataFrame(table.to_pandas(), schema=_spark_schema(table.schema))
        frame = frame.persist()
        frame.createOrReplaceTempView(name)
        self._frames[name] = frame

    def write_parquet(self, sql: str, directory: Path, schema: pa.Schema) -> None:
        cols = ", ".join(f"CAST({f.name} AS STRING) AS {f.name}" for f in schema)
        self.spark.sql(f"SELECT {cols} FROM ({sql})").write.mode("overwrite").parquet(str(directory.resolve()))

    def close(self) -> None:
        for name in list(self._frames):
            self.drop(name)
        if self._saved_partitions is not None:
            self.spark.conf.set("spark.sql.shuffle.partitions", self._saved_partitions)


def _spark_schema(schema: pa.Schema):
    from pyspark.sql import types as T

    kinds = {pa.int64(): T.LongType(), pa.float64(): T.DoubleType(), pa.string(): T.StringType(),
             pa.large_string(): T.StringType()}
    return T.StructType([T.StructField(f.name, kinds[f.type], True) for f in schema])
