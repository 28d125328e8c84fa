"""DuckDB and Spark return the same selection for the same input, config and seed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core.config import parse_config
from photogenic.pipeline.selection.sql import DROPPED_SCHEMA
from photogenic.pipeline.selection.stage import run_select
from tests.pipeline.selection.synthetic import synthetic_scores, write_scores


def _both_engines(run_dirs: tuple[Path, Path], **select) -> tuple[dict, dict]:
    config = parse_config({"select": {"threads": 1, "memory_limit": "1GB", **select}})
    duck = run_select(run_dirs[0], config, engine="duckdb")
    spark = run_select(run_dirs[1], config, engine="spark", master="local[2]")
    return duck, spark


def _assert_same_output(runs: tuple[Path, Path], duck: dict, spark: dict) -> None:
    tables = [pq.read_table(r / "candidates" / "part-00000.parquet") for r in runs]
    assert tables[0].column("key").to_pylist() == tables[1].column("key").to_pylist()
    assert tables[0].equals(tables[1])  # every column, engagement doubles included
    summaries = [json.loads((r / "candidates" / "_summary.json").read_text()) for r in runs]
    for summary, engine in zip(summaries, ("duckdb", "spark")):
        assert summary["details"].pop("engine") == summary["config"].pop("engine") == engine
    assert summaries[0] == summaries[1]
    dropped = [pq.read_table(r / "candidates" / "_dropped").sort_by("key").cast(DROPPED_SCHEMA) for r in runs]
    assert dropped[0].equals(dropped[1])
    assert duck["selected"] == spark["selected"] > 0


def _copies(tmp_path: Path, make) -> tuple[Path, Path]:
    return tuple(make(tmp_path / name) for name in ("duck", "spark"))


def test_engines_agree_on_the_scored_sample_pool(spark, scored_run, tmp_path):
    runs = _copies(tmp_path, lambda d: shutil.copytree(scored_run / "scores", d / "scores") and d)
    duck, spark_summary = _both_engines(runs, target=60, seed=4)
    _assert_same_output(runs, duck, spark_summary)


def test_engines_agree_on_a_100k_row_table(spark, tmp_path):
    table = synthetic_scores(100_000, seed=21)
    parts = [table.slice(i, 25_000) for i in range(0, 100_000, 25_000)]
    runs = _copies(tmp_path, lambda d: write_scores(d, parts))
    duck, spark_summary = _both_engines(runs, target=10_000, seed=7)
    _assert_same_output(runs, duck, spark_summary)
    assert duck["duplicates_removed"]["near"] > 1000


@pytest.mark.parametrize("select", [
    {"balance": "metaclip", "engagement": "wilson", "min_engagement": 0.01},
    {"engagement": "bayes", "concept_weights": {"landscape": 3.0, "food": 0.0}, "near_dup_bands": 4},
])
def test_engines_agree_on_the_other_rules(spark, tmp_path, select):
    table = synthetic_scores(6000, seed=5)
    runs = _copies(tmp_path, lambda d: write_scores(d, [table]))
    duck, spark_summary = _both_engines(runs, target=1500, seed=3, **select)
    _assert_same_output(runs, duck, spark_summary)
