"""candidates/_summary.json in the one stage-summary shape: counts add up, reruns are identical."""
from __future__ import annotations

import collections
import json

import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core.config import parse_config
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import mark_success
from photogenic.pipeline.core.summary import read_summary
from photogenic.pipeline.selection.stage import run_select
from tests.pipeline.selection.synthetic import synthetic_scores, write_scores


def _config(**select):
    return parse_config({"select": {"threads": 1, "memory_limit": "1GB", **select}})


@pytest.mark.parametrize("select", [
    {"min_engagement": 0.001},
    {"balance": "metaclip", "engagement": "wilson"},
])
def test_counts_add_up_and_match_the_audit_table(tmp_path, select):
    run = RunDir(write_scores(tmp_path / "run", [synthetic_scores(3000, seed=2)]))
    returned = run_select(run, _config(target=400, **select), seed=5)
    summary = read_summary(run.candidates)
    assert summary.stage == "select" and summary.seconds is None
    assert summary.rows_in == 3000 and summary.rows_out == returned["selected"]
    assert sum(summary.by_reason.values()) + summary.rows_out == summary.rows_in
    audit = collections.Counter(pq.read_table(run.dropped).column("reason").to_pylist())
    audited = {r: n for r, n in summary.by_reason.items() if r not in ("not_passed", "null_key") and n}
    assert audited == dict(audit)
    # details is select's own summary (what run_select returns, less its timings)
    assert summary.details == {k: v for k, v in returned.items() if k not in ("wall_s", "step_s", "step_cpu_s")}
    assert summary.config["seed"] == 5 and summary.config["target"] == 400


def test_the_same_scores_in_another_run_write_the_same_summary(tmp_path):
    table = synthetic_scores(1500, seed=3)
    runs = [RunDir(write_scores(tmp_path / name, [table])) for name in ("a", "b")]
    for run in runs:
        run_select(run, _config(target=200))
    files = [json.loads(RunDir.summary(r.candidates).read_text()) for r in runs]
    assert files[0] == files[1] and files[0]["input_fingerprint"]


def test_a_complete_run_is_skipped_with_its_summary(tmp_path):
    run = RunDir(write_scores(tmp_path / "run", [synthetic_scores(800, seed=4)]))
    first = run_select(run, _config(target=100))
    again = run_select(run, _config(target=100))
    assert again["skipped"] is True and again["selected"] == first["selected"] == 100


def test_candidates_selected_before_the_new_shape_are_still_skipped_with_their_counts(tmp_path):
    run = RunDir(write_scores(tmp_path / "run", [synthetic_scores(300, seed=6)]))
    run.candidates.mkdir()
    RunDir.summary(run.candidates).write_text(json.dumps({"selected": 42, "engine": "duckdb"}))
    mark_success(run.candidates)
    assert run_select(run, _config(target=10)) == {"skipped": True, "selected": 42, "engine": "duckdb"}
