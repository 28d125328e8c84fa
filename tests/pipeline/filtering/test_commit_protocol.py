"""The filter job's commit protocol (no rename needed, so the same on disk and on a store): each
attempt writes a part under its own name, the shard's marker commits one; readers list markers,
so a duplicate, racing or late attempt never adds a row."""
from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq

from photogenic.pipeline.core.config import load_config
from photogenic.pipeline.core.runio import committed_parquet
from photogenic.pipeline.filtering.job import process_shard, run_filter, stats_path, worker_cascade
from photogenic.pipeline.pool.readers import discover_shards


def _cascade(cheap_config_path):
    config = load_config(cheap_config_path)
    return worker_cascade(config.model_dump_json(), False)


def _keys(files) -> list[str]:
    return [k for f in files for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()]


def test_an_attempt_after_the_commit_adds_nothing(sample_pool, cheap_run, cheap_config_path):
    scores = cheap_run / "scores"
    before = sorted(p.name for p in scores.glob("part-*.parquet"))
    shard = discover_shards(sample_pool)[0]
    stats = process_shard(shard, _cascade(cheap_config_path), scores, 64)  # e.g. a speculative copy
    assert stats == json.loads(stats_path(scores, shard.id).read_text())
    assert sorted(p.name for p in scores.glob("part-*.parquet")) == before


def test_racing_and_late_attempts_are_never_read(sample_pool, cheap_run, cheap_config_path, tmp_path, spark):
    config = load_config(cheap_config_path)
    run = tmp_path / "run"
    run_filter(sample_pool, run, config, spark=spark)
    scores = run / "scores"
    shards = discover_shards(sample_pool)
    cascade = _cascade(cheap_config_path)
    # Two attempts of one shard that both started before either committed: both parts exist,
    # the marker names one.
    stats_path(scores, shards[0].id).unlink()
    process_shard(shards[0], cascade, scores, 64)
    stats_path(scores, shards[0].id).unlink()
    process_shard(shards[0], cascade, scores, 64)
    # A late attempt of another shard: its part landed, its marker never did (killed, or its
    # executor was declared lost) while the first attempt's marker stands.
    late = scores / f"part-{shards[1].id}.attempt-0123456789ab.parquet"
    late.write_bytes(next(p for p in scores.glob(f"part-{shards[1].id}.attempt-*.parquet")).read_bytes())
    assert len(list(scores.glob(f"part-{shards[0].id}.*"))) == 3  # the first run's and two attempts'
    files = committed_parquet(scores)
    assert len(files) == len(shards)
    keys = _keys(files)
    assert len(keys) == len(set(keys)) == 282
    # Every reader sees the same rows: the committed parts equal the untouched run's.
    query = "select * exclude (shard) from read_parquet({}) order by key"
    assert (duckdb.sql(query.format([str(f) for f in files])).fetchall()
            == duckdb.sql(query.format(f"'{cheap_run}/scores/*.parquet'")).fetchall())
    # The next run of the job (nothing left to score) removes the parts no marker names.
    funnel = run_filter(sample_pool, run, config, spark=spark)
    assert funnel["shards_run_this_time"] == 0 and funnel["rows_in"] == 282
    assert sorted(scores.glob("part-*.parquet")) == files
