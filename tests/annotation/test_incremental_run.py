"""`photogenic run` on a pool that grows by two shards, against a real Spark and Label Studio:
the second run scores only the new shards, keeps every earlier review decision and pushes no key
twice; a run that finds the lock held exits 75 at once."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.orchestrate import EXIT_LOCKED, run_lock
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import write_config  # noqa: E402
from tests.conftest import CHEAP_CONFIG, PHOTOGENIC, REPO  # noqa: E402

pytest_plugins = ["tests.annotation.helpers"]
pytestmark = pytest.mark.slow


def photogenic(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PHOTOGENIC, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=900)
    if check:
        assert proc.returncode == 0, f"photogenic {' '.join(map(str, args))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def shard_files(pool: Path) -> list[list[Path]]:
    """The pool's shards, each as its tar and its metadata parquet."""
    return [[tar, tar.with_suffix(".parquet")] for tar in sorted(pool.glob("*.tar"))]


def run_once(pool: Path, run: Path, config: Path) -> dict:
    proc = photogenic("run", "--pool", pool, "--run", run, "--config", config, "--json")
    summary = json.loads(proc.stdout)
    assert summary["status"] == "ok" and summary["exit_code"] == 0, summary
    assert json.loads((run / "_runs" / "last.json").read_text()) == summary
    return summary


def decisions(run: Path) -> dict[str, tuple]:
    table = pq.read_table(RunDir.of(run).decisions("pass1")).to_pylist()
    return {r["key"]: (r["keep"], r["n_keep"], r["n_annotations"]) for r in table}


def test_a_growing_pool_keeps_its_decisions_and_pushes_each_key_once(sample_pool, tmp_path, ls_server, ls_config,
                                                                   ls_client):
    shards = shard_files(sample_pool)
    assert len(shards) >= 4
    pool = tmp_path / "pool"
    pool.mkdir()
    for files in shards[:-2]:
        for f in files:
            shutil.copy(f, pool / f.name)
    run = tmp_path / "run"
    config = write_config(tmp_path / "photogenic.toml", ls_config,
                          "[select]\ntarget = 60\n" + CHEAP_CONFIG)

    first = run_once(pool, run, config)
    assert first["stages"]["filter"]["shards_scored"] == len(shards) - 2
    assert first["stages"]["review"]["passes"]["pass1"]["pushed"] > 0
    # Annotators work through pass 1 (SIMULATED), then their decisions are pulled.
    photogenic("review", "simulate", "--run", run, "--pass", "1", "--config", config, "--annotators", "2")
    photogenic("review", "pull", "--run", run, "--pass", "1", "--config", config)
    before = decisions(run)
    assert any(n for _, _, n in before.values()), "the simulated annotators left no annotations"

    for files in shards[-2:]:  # the pool grows by two shards
        for f in files:
            shutil.copy(f, pool / f.name)
    second = run_once(pool, run, config)
    stages = second["stages"]
    assert stages["filter"]["shards_scored"] == 2 and stages["filter"]["shards"] == len(shards)
    assert stages["select"]["ran"] is True
    after = decisions(run)
    assert {k: after[k] for k in before} == before  # every earlier decision unchanged
    pushed_keys = set(after) - set(before)
    assert stages["review"]["passes"]["pass1"]["pushed"] == len(pushed_keys)

    # No key is pushed twice: one task per key in the pass-1 project.
    from photogenic.annotation.tasksets import task_keys
    project = json.loads((run / "review" / "pass1" / "push.json").read_text())["project_id"]
    keys = [k for page in ls_client.task_pages(project) for t in page for k in task_keys(t["data"])]
    assert len(keys) == len(set(keys)) == len(after)

    third = run_once(pool, run, config)  # nothing new: nothing runs again
    assert third["stages"]["filter"]["shards_scored"] == 0
    assert third["stages"]["select"]["ran"] is False
    assert third["stages"]["review"]["passes"]["pass1"]["pushed"] == 0
    assert decisions(run) == after


def test_a_second_run_on_a_locked_run_directory_exits_75(tmp_path, sample_pool):
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(RunDir.of(run)):
        proc = photogenic("run", "--pool", sample_pool, "--run", run, "--stages", "filter", check=False)
    assert proc.returncode == EXIT_LOCKED, proc.stderr
    assert "another `photogenic run` holds" in proc.stderr
    assert not (run / "scores").exists()
