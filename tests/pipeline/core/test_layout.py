"""The run layout: every stage's path from one place, relative to the run it belongs to."""
from __future__ import annotations

from pathlib import Path

from photogenic.pipeline.core.layout import EvalDir, ExportDir, ModelDir, RunDir


def test_run_paths(tmp_path):
    run = RunDir.of(tmp_path)
    assert RunDir.of(run) is run and Path(run) == tmp_path
    assert run.candidates == tmp_path / "candidates" and run.dropped == tmp_path / "candidates" / "_dropped"
    assert RunDir.summary(run.candidates) == tmp_path / "candidates" / "_summary.json"
    assert run.decisions("pass2") == tmp_path / "review" / "pass2" / "decisions.parquet"
    assert run.stage_dir("candidates") == run.candidates and run.stage_dir("pass1") == run.review("pass1")


def test_model_export_and_eval_paths(tmp_path):
    model = ModelDir(tmp_path / "model")
    assert model.run_info == tmp_path / "model" / "training_state" / "run.json"
    assert model.checkpoint(12) == model.checkpoints / "step-000012"
    assert model.best_weights(3).parent == model.training_state and model.best_weights(3).name == "best-000003"
    assert ExportDir(tmp_path).imagefolder == tmp_path / "imagefolder"
    assert EvalDir(tmp_path).images("base") == tmp_path / "images" / "base"
