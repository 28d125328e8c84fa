"""Fault drill on object storage: the S3 server goes away while the filter job writes (parts
written, markers not yet): a clear error and a non-zero exit, nothing committed half-way; once it
is back, the same command completes with exactly one row per key."""
from __future__ import annotations

import io
import json
import subprocess
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import CHEAP_CONFIG, PHOTOGENIC, REPO, run_cli
from tests.s3 import environ_with, filesystem

pytestmark = pytest.mark.timeout(900)
# Fail fast once the store is gone: one attempt per request, short timeouts.
CONFIG = """
[storage.options.s3]
config_kwargs = {connect_timeout = 2, read_timeout = 10, retries = {max_attempts = 1}}
""" + CHEAP_CONFIG


def markers(fs, scores: str) -> list[dict]:
    fs.invalidate_cache()
    return [json.loads(fs.cat(m)) for m in sorted(fs.find(f"{scores}/_stats"))]


def test_store_dropped_mid_write_then_back(s3, s3_pool, droppable, cheap_run, tmp_path):
    config = tmp_path / "drill.toml"
    config.write_text(CONFIG)
    run = "s3://photogenic-test/runs/drill"
    scores = run.removeprefix("s3://") + "/scores"
    env = environ_with({**s3, "AWS_ENDPOINT_URL": droppable.endpoint})
    cmd = [*PHOTOGENIC, "filter", "--pool", s3_pool, "--out", run, "--config", str(config), "--quiet",
           "--master", "local[2]"]
    # Hold every shard 4 s between writing its part and committing its marker.
    proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "PHOTOGENIC_SLOWPOINT": "filter.before_commit:4"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fs = filesystem(s3)  # the test's own view of the bucket, behind the dropped endpoint
    deadline = time.time() + 240
    while not any("/part-" in p for p in fs.find(scores)) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
        fs.invalidate_cache()
    droppable.drop()  # the store goes away with parts written and their markers not yet
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    # The last word is a clear one (Spark's own log above it may show the task's traceback).
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: filter job failed") and "rerun the same command to resume" in last, err[-3000:]
    assert "Could not connect" in last or "Connection" in last or "connect" in last.lower(), last

    committed = markers(fs, scores)
    assert len(committed) < 8
    for m in committed:  # whatever committed is whole: its part exists with the marker's rows
        assert pq.read_table(io.BytesIO(fs.cat(f"{scores}/{m['part']}"))).num_rows == m["rows"]
    uncommitted = [p for p in fs.find(scores) if "/part-" in p
                   and p.rsplit("/", 1)[-1] not in {m["part"] for m in committed}]
    assert uncommitted  # written before the drop, never committed: readers ignore them

    droppable.restore()
    run_cli("filter", "--pool", s3_pool, "--out", run, "--config", config, "--quiet", "--master", "local[2]",
            env=env)
    done = markers(fs, scores)
    assert sorted(m["shard"] for m in done) == sorted({m["shard"] for m in done}) and len(done) == 8
    table = pa.concat_tables([pq.read_table(io.BytesIO(fs.cat(f"{scores}/{m['part']}"))) for m in done])
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 282
    parts_left = [p for p in fs.find(scores) if "/part-" in p]
    assert len(parts_left) == 8  # the rerun removed the uncommitted attempts
    con = duckdb.connect()
    con.register("remote", table)
    cols = "* EXCLUDE (shard, source)"
    assert (con.sql(f"select {cols} from remote order by key").fetchall()
            == duckdb.sql(f"select {cols} from '{cheap_run}/scores/*.parquet' order by key").fetchall())
