"""Trainer options: trackers, gradient checkpointing, min-SNR weighting, EMA offload/foreach,
listed buckets, and where the training state goes (never inside the model folder)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from photogenic.pipeline.core.config.training import TrainConfig
from photogenic.pipeline.core.layout import ModelDir
from photogenic.training.trainer import TrainError, train
from tests.training.helpers import make_tiny_set, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_set(tmp_path_factory.mktemp("tiny-options"))


def _losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "training_state" / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r]


def _event_files(out: Path) -> list[Path]:
    return list(ModelDir(out).state.logs.rglob("events.out.tfevents.*"))


def test_memory_options_min_snr_and_listed_buckets_train_with_finite_loss(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    data, base = tiny
    config = tiny_config(max_steps=4, validate_every=2, gradient_checkpointing=True, snr_gamma=5.0,
                         offload_ema=True, foreach_ema=True, buckets="64x64, 80x48,48x80",
                         report_to="tensorboard")
    out = tmp_path / "model"
    result = train(data, base, out, config, progress=False)
    losses = _losses(out)
    assert result.steps == 4 and len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert result.best_val_loss is not None and math.isfinite(result.best_val_loss)
    run = json.loads(ModelDir(out).run_info.read_text())
    assert set(run["buckets"]) <= {"64x64", "80x48", "48x80"} and run["trackers"] == ["tensorboard"]
    # The tensorboard tracker (accelerate init_trackers) logged beside metrics.jsonl, in the
    # training state, not in the model folder.
    assert _event_files(out)
    assert not [p for p in out.rglob("*") if "tfevents" in p.name]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(_event_files(out)[0].parent))
    events.Reload()
    assert {"train_loss", "val_loss", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3, 4]


def test_gradient_checkpointing_learns_the_same_and_no_tracker_writes_no_logs(tiny, tmp_path):
    data, base = tiny
    plain = train(data, base, tmp_path / "a", tiny_config(max_steps=2, report_to="none"), progress=False)
    ckpt = train(data, base, tmp_path / "b", tiny_config(max_steps=2, report_to="none",
                                                         gradient_checkpointing=True), progress=False)
    assert torch.allclose(torch.tensor(_losses(Path(plain.out_dir))), torch.tensor(_losses(Path(ckpt.out_dir))),
                          rtol=1e-5, atol=1e-6)
    assert not _event_files(tmp_path / "a")


def test_min_snr_weighting_changes_the_training_loss_only(tiny, tmp_path):
    data, base = tiny
    a = train(data, base, tmp_path / "a", tiny_config(max_steps=1, report_to="none"), progress=False)
    b = train(data, base, tmp_path / "b", tiny_config(max_steps=1, report_to="none", snr_gamma=1.0),
              progress=False)
    assert _losses(Path(a.out_dir)) != _losses(Path(b.out_dir))
    rows = [json.loads(x) for x in (tmp_path / "b" / "training_state" / "metrics.jsonl").read_text().splitlines()]
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "training_state" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["val_loss"] == rows_a[0]["val_loss"]  # step 0: same weights, plain MSE


def test_state_dir_option_and_resume_finds_it(tiny, tmp_path):
    data, base = tiny
    out, state = tmp_path / "model", tmp_path / "elsewhere"
    config = tiny_config(max_steps=2, validate_every=1, report_to="none")
    train(data, base, out, config, progress=False, state_dir=state)
    assert (state / "checkpoints" / "step-000002" / "optimizer.bin").exists()
    assert not ModelDir(out).state.root.exists()
    again = train(data, base, out, config.model_copy(update={"max_steps": 3}), resume=True, progress=False)
    assert again.steps == 3 and (state / "checkpoints" / "step-000003").exists()
    with pytest.raises(TrainError, match="outside"):
        train(data, base, tmp_path / "m2", config, progress=False, state_dir=tmp_path / "m2" / "state")


def test_a_fresh_run_clears_an_old_runs_checkpoints_but_keeps_the_cache(tiny, tmp_path):
    data, base = tiny
    out = tmp_path / "model"
    config = tiny_config(max_steps=2, validate_every=2, report_to="none")
    train(data, base, out, config, progress=False)
    state = ModelDir(out).state
    cached = sorted(state.latent_cache.iterdir())
    import shutil

    shutil.rmtree(out)  # the model deleted, its training state left behind
    train(data, base, out, config.model_copy(update={"max_steps": 1}), progress=False)
    assert [p.name for p in state.checkpoints.iterdir()] == ["step-000001"]
    assert sorted(state.latent_cache.iterdir()) == cached


def test_config_options_are_validated():
    assert TrainConfig(buckets="512x512,576x448, 448X576").bucket_sizes == [(448, 576), (512, 512), (576, 448)]
    assert TrainConfig(buckets=["512x512", [576, 448]]).buckets == ["512x512", "576x448"]
    for bad, match in (("512x", "WIDTHxHEIGHT"), ("500x512", "multiples of 8"),
                       ("512x512,512x512", "twice"), ("", "empty")):
        with pytest.raises(ValidationError, match=match):
            TrainConfig(buckets=bad)
    assert TrainConfig().report_to == ["auto"]
    assert TrainConfig(report_to="tensorboard, wandb").report_to == ["tensorboard", "wandb"]
    with pytest.raises(ValidationError, match="unknown tracker"):
        TrainConfig(report_to="mlflow")
    with pytest.raises(ValidationError, match="stand alone"):
        TrainConfig(report_to=["none", "wandb"])
    assert TrainConfig(report_to="auto").trackers({"tensorboard": True}) == ["tensorboard"]
    assert TrainConfig(report_to="auto").trackers({"tensorboard": False}) == []
    with pytest.raises(ValueError, match="not installed"):
        TrainConfig(report_to="wandb").trackers({"wandb": False})
    with pytest.raises(ValidationError, match="use_ema"):
        TrainConfig(use_ema=False, offload_ema=True)
    with pytest.raises(ValidationError):
        TrainConfig(snr_gamma=0)


def test_buckets_the_model_cannot_take_are_refused(tiny, tmp_path):
    data, base = tiny
    with pytest.raises(TrainError, match="multiples of 16"):
        train(data, base, tmp_path / "m", tiny_config(buckets="64x64,72x56", report_to="none"), progress=False)


def test_a_url_out_uploads_the_model_folder_only(tiny, tmp_path, monkeypatch):
    """A URL --out trains in a local work folder (WORK/model, state in WORK/training_state/model)
    and uploads the model folder: no checkpoint, optimizer state or latent cache reaches the store."""
    from photogenic.pipeline.core.storage import filesystem
    from photogenic.training.remote import local_output, publish_output

    data, base = tiny
    monkeypatch.setenv("PHOTOGENIC_CACHE", str(tmp_path / "cache"))
    out = f"memory://photogenic-test/{tmp_path.name}/model"
    work = local_output(out)
    assert work.name == "model" and work.is_relative_to(tmp_path / "cache")
    train(data, base, work, tiny_config(max_steps=1, report_to="none"), progress=False)
    publish_output(work, out)
    fs, inner = filesystem(out)
    names = {p.split("/model/", 1)[1] for p in fs.find(inner)}
    assert {"model_index.json", "_SUCCESS", "unet/diffusion_pytorch_model.safetensors",
            "training_state/run.json", "training_state/metrics.jsonl"} <= names
    assert not [n for n in names if any(w in n for w in ("cache", "checkpoint", "optimizer", ".pkl", "best-"))]
    assert list(ModelDir(work).state.checkpoints.glob("step-*/optimizer.bin"))  # kept locally
