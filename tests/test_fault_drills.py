"""Fault drills: a real SIGKILL in the middle of a stage (at a failpoint, so it always lands
mid-stage), then a rerun: the stage completes and equals an uninterrupted run."""
import json
import os
import shutil
import signal

import duckdb
import pytest

from tests.conftest import run_cli
from tests.pipeline.export.fake_run import make_fake_run

pytestmark = pytest.mark.timeout(900)


def killed_at(failpoint: str, *args) -> None:
    proc = run_cli(*args, check=False, env={**os.environ, "PHOTOGENIC_FAILPOINT": failpoint})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def exported_files(out) -> dict:
    lineage = json.loads((out / "lineage.json").read_text())
    return lineage["files"] if "files" in lineage else lineage["sha256"]


def test_export_killed_mid_way_then_rerun_equals_uninterrupted(tmp_path):
    run_b = make_fake_run(tmp_path / "b")
    run_cli("export", "--run", run_b)
    reference = exported_files(run_b / "export")
    shutil.rmtree(run_b / "export")
    killed_at("export.sample:3", "export", "--run", run_b)
    assert not (run_b / "export" / "_SUCCESS").exists()  # nothing half-written in place
    run_cli("export", "--run", run_b)
    assert exported_files(run_b / "export") == reference
    assert not [p for p in run_b.iterdir() if ".tmp-" in p.name]
    keys = duckdb.sql(f"select key from '{run_b}/export/manifest.parquet'").fetchall()
    assert len(keys) == len(set(keys))


def test_filter_worker_killed_before_a_shard_commit_then_rerun_equals_uninterrupted(
        sample_pool, cheap_run, cheap_config_path, tmp_path):
    # The Python worker (not the driver) is SIGKILLed with a shard written but not committed;
    # the driver's SIGKILL is drilled in test_filter_job.py.
    run = tmp_path / "run"
    proc = run_cli("filter", "--pool", sample_pool, "--out", run, "--config", cheap_config_path,
                   "--master", "local[1]", "--quiet", check=False,
                   env={**os.environ, "PHOTOGENIC_FAILPOINT": "filter.before_commit:2"})
    assert proc.returncode != 0
    assert 1 <= len(list((run / "scores").glob("part-*.parquet"))) < 5
    assert not (run / "scores" / "_SUCCESS").exists()
    run_cli("filter", "--pool", sample_pool, "--out", run, "--config", cheap_config_path, "--quiet")
    q = "select * exclude (shard) from '{}/scores/*.parquet' order by key"
    assert duckdb.sql(q.format(run)).fetchall() == duckdb.sql(q.format(cheap_run)).fetchall()


def test_select_killed_before_publishing_then_rerun_equals_uninterrupted(cheap_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cheap_run / "scores", run / "scores")
    run_cli("select", "--run", run, "--target", "60")
    reference = {p.name: p.read_bytes() for p in (run / "candidates").glob("*.parquet")}
    shutil.rmtree(run / "candidates")
    killed_at("select.before_publish", "select", "--run", run, "--target", "60")
    assert not (run / "candidates").exists()
    run_cli("select", "--run", run, "--target", "60")
    assert {p.name: p.read_bytes() for p in (run / "candidates").glob("*.parquet")} == reference
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]
