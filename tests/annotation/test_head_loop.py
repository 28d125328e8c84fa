"""The head in the loop, against a real Spark and Label Studio: pulling pass 1 learns a head from
its (SIMULATED) decisions on the saved tiny-random CLIP embeddings, with a held-out AUC and the
"meaningless" warning; pass 2's tasks go in best-first by that head; `[select] head = "auto"`
blends it into the next selection identically on DuckDB and Spark; the report shows the head."""
from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from photogenic.annotation.head import head_path, head_scores
from photogenic.annotation.projects import find_project
from photogenic.pipeline.core.layout import RunDir
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import write_config  # noqa: E402
from tests.conftest import CHEAP_CONFIG, PHOTOGENIC, REPO  # noqa: E402

pytest_plugins = ["tests.annotation.helpers"]
pytestmark = pytest.mark.slow

WITH_CLIP = CHEAP_CONFIG.replace("[filters.clip]\nenabled = false\n", "")  # tiny-random CLIP: embeddings


def photogenic(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PHOTOGENIC, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, f"photogenic {' '.join(map(str, args))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def candidates(run) -> list[dict]:
    return pq.read_table(RunDir.of(run).candidates / "part-00000.parquet").to_pylist()


def test_the_head_learnt_from_pass_1_orders_pass_2_and_ranks_the_next_selection(sample_pool, tmp_path, ls_server,
                                                                                ls_config, ls_client):
    run = tmp_path / "run"
    config = write_config(tmp_path / "photogenic.toml", ls_config, "[select]\ntarget = 120\n" + WITH_CLIP)
    photogenic("filter", "--pool", sample_pool, "--out", run, "--config", config, "--save-embeddings")
    photogenic("select", "--run", run, "--config", config)
    before = candidates(run)
    assert all(r["head_score"] is None and r["rank_score"] == r["engagement"] for r in before)

    photogenic("review", "push", "--run", run, "--pass", "pass1", "--config", config)
    photogenic("review", "simulate", "--run", run, "--pass", "pass1", "--config", config, "--keep-share", "0.3")
    pulled = photogenic("review", "pull", "--run", run, "--pass", "pass1", "--config", config)
    assert "head learnt from pass1" in pulled.stdout
    meta = json.loads((head_path(run, "pass1").with_name("head.pth.json")).read_text())
    assert meta["embedding_model"].startswith("tiny-random") and meta["meaningless"] and meta["notes"]
    held = meta["held_out"]
    assert held["n_held_out"] >= 5 and 0.0 <= held["auc"] <= 1.0
    # Pulling again with the same decisions reuses the head.
    again = photogenic("review", "pull", "--run", run, "--pass", "pass1", "--config", config)
    assert "reused" in again.stdout

    # Pass 2 imports pass 1's keeps best-first by the head: its sequential queue serves them so.
    photogenic("review", "push", "--run", run, "--pass", "pass2", "--config", config)
    push = json.loads((RunDir.of(run).review("pass2") / "push.json").read_text())
    assert push["ordered_by"] == "head of pass1"
    project = find_project(ls_client, run, "pass2")
    keys = [t["data"]["key"] for t in sorted(ls_client.tasks(project["id"], fields="task_only"), key=lambda t: t["id"])]
    scores = head_scores(head_path(run, "pass1"), run, keys)
    assert len(keys) >= 3 and [scores[k] for k in keys] == sorted((scores[k] for k in keys), reverse=True)

    # The next selection blends the head into its ranking, the same on both engines.
    blend = write_config(tmp_path / "blend.toml", ls_config,
                         '[select]\ntarget = 120\nhead = "auto"\nhead_weight = 0.7\n' + WITH_CLIP)
    other = tmp_path / "run-spark"
    shutil.copytree(run, other, symlinks=True)
    photogenic("select", "--run", run, "--config", blend)  # a new head is new input: selects again
    photogenic("select", "--run", other, "--config", blend, "--engine", "spark", "--force")
    duck, spark = candidates(run), candidates(other)
    assert [r["key"] for r in duck] == [r["key"] for r in spark]
    assert all(r["head_score"] is not None for r in duck)
    assert [round(r["rank_score"], 9) for r in duck] == [round(r["rank_score"], 9) for r in spark]
    for concept in {r["concept"] for r in duck}:  # each concept's rows in rank-score order
        ranks = [r["rank_score"] for r in duck if r["concept"] == concept]
        assert ranks == sorted(ranks, reverse=True)
    summary = json.loads((RunDir.of(run).candidates / "_summary.json").read_text())
    assert summary["details"]["head"]["file"].endswith("pass1/head.pth")

    photogenic("report", "--run", run)
    html = (RunDir.of(run).report / "index.html").read_text()
    assert 'data-head-pass="pass1"' in html and 'data-head-warning="pass1"' in html
