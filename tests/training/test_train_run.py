"""The trainer on the tiny model (CPU): loss falls, early stopping, kill + resume, output loads."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.helpers import (
    checkpoint_ema,
    make_tiny_set,
    max_abs_diff,
    tiny_config,
    unet_weights,
)
from photogenic.pipeline.core.layout import ModelDir
from photogenic.training.trainer import TrainError, train

from photogenic.pipeline.core.summary import read_summary  # noqa: E402
from tests.conftest import REPO  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_set(tmp_path_factory.mktemp("tiny-train"))


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "training_state" / "metrics.jsonl").read_text().split("\n")
            if x.strip()]


def test_loss_falls_and_output_is_a_diffusers_pipeline(tiny, tmp_path):
    from diffusers import DiffusionPipeline

    data, base = tiny
    out = tmp_path / "model"
    result = train(data, base, out, tiny_config(max_steps=20), progress=False)
    rows = _metrics(out)
    train_losses = [r["train_loss"] for r in rows if "train_loss" in r]
    val = {r["step"]: r["val_loss"] for r in rows if r.get("val_loss") is not None}
    assert len(train_losses) == 20
    assert np.mean(train_losses[-5:]) < 0.8 * np.mean(train_losses[:5])
    assert val[20] < val[0]  # the held-out loss at fixed noise falls too
    assert result.best_step == min(val, key=val.get)
    run = json.loads((out / "training_state" / "run.json").read_text())
    assert run["effective_batch"] == 4 and run["gradient_accumulation"] == 2
    assert run["train_images"] + run["validation_images"] == 9
    summary = read_summary(out)  # the one stage-summary shape
    assert summary.stage == "train" and summary.rows_in == 9 and summary.rows_out == run["train_images"]
    assert summary.by_reason == {"validation": run["validation_images"]}
    assert summary.details["best_step"] == result.best_step and summary.input_fingerprint
    # The output is the best checkpoint (EMA weights) as a stock diffusers pipeline.
    best = json.loads((out / "training_state" / "best.json").read_text())
    assert best["ema"] is True and best["step"] == result.best_step
    assert not (out / "training_state" / best["dir"]).exists()  # it became out/unet: one copy
    assert max_abs_diff(unet_weights(out / "unet"), unet_weights(base / "unet")) > 0
    # The model folder ships: no optimizer state, checkpoint or latent cache in it; those are
    # beside it (RUN/model -> RUN/training_state/model).
    shipped = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert not [n for n in shipped if any(w in n for w in ("optimizer", "checkpoint", "cache",
                                                           "random_states", ".pkl", "best-"))]
    assert set(p.name for p in (out / "training_state").iterdir()) == {
        "run.json", "metrics.jsonl", "best.json", "result.json", "_SUCCESS"}
    state = ModelDir(out).state
    assert state.root == tmp_path / "training_state" / "model" == Path(run["state_dir"])
    assert list(state.latent_cache.glob("*.safetensors"))
    last = state.checkpoint(20)
    assert (last / "optimizer.bin").exists() and (last / "model.safetensors").exists()
    assert json.loads(state.latest.read_text()) == {"checkpoint": last.name, "step": 20}
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 20
    pipe = DiffusionPipeline.from_pretrained(out)
    image = pipe("a cup of coffee", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    assert (out / "training_state" / "_SUCCESS").exists()
    assert (out / "TINY_RANDOM_MODEL.txt").exists()  # still says its images are meaningless


def test_early_stopping_stops_a_diverging_run_and_keeps_the_best(tiny, tmp_path):
    data, base = tiny
    out = tmp_path / "model"
    # The learning rate warms up to far too high a value: validation loss falls for the first
    # few steps, then climbs.
    config = tiny_config(learning_rate=0.05, lr_warmup_steps=20, validate_every=2, patience=2,
                         max_steps=40, use_ema=False, max_grad_norm=0.0, keep_checkpoints=40)
    result = train(data, base, out, config, progress=False)
    val = {r["step"]: r["val_loss"] for r in _metrics(out) if r.get("val_loss") is not None}
    assert result.stopped_early and result.steps < 40
    best_step = min(val, key=val.get)
    assert best_step > 0  # a trained checkpoint, not the base model
    assert result.best_step == best_step and result.best_val_loss == val[best_step]
    later = [s for s in val if s > best_step]
    assert len(later) == 2 and all(val[s] >= val[best_step] for s in later)  # patience = 2
    model = ModelDir(out)
    assert json.loads(model.best.read_text())["step"] == best_step
    # Without EMA the best weights are the checkpoint's at the best step (every validation
    # checkpoints here): the shipped UNet is that one, not the last.
    best_weights = unet_weights(model.checkpoint(best_step))
    assert max_abs_diff(unet_weights(out / "unet"), best_weights) == 0
    last = unet_weights(model.checkpoint(result.steps))
    assert max_abs_diff(last, best_weights) > 0  # it kept the best, not the last


def _train_cli(data: Path, base: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "photogenic.training.cli", "--data", str(data), "--base-model", str(base),
            "--out", str(out), "--config", str(config), "--quiet", *extra]


def _write_config(path: Path, **train) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps({"train": train}))
    return path


def test_kill_and_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    data, base = tiny
    settings = dict(tiny_config(max_steps=16, validate_every=4, checkpoint_every=2,
                                patience=50).model_dump(exclude_none=True))
    config_file = _write_config(tmp_path / "train.toml", **settings)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_train_cli(data, base, out, config_file), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "training_state" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 6:  # step 5 done
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = json.loads(ModelDir(out).latest.read_text())["step"]
    assert 0 < killed_at < 16
    assert not (out / "model_index.json").exists()

    resumed = train(data, base, out, tiny_config(**settings), resume=True, progress=False)
    reference = train(data, base, tmp_path / "straight", tiny_config(**settings), progress=False)
    assert resumed.steps == reference.steps == 16
    # accelerate save_state / load_state: the resumed run is the uninterrupted one, bit for bit.
    ckpt_a, ckpt_b = ModelDir(out).checkpoint(16), ModelDir(tmp_path / "straight").checkpoint(16)
    assert max_abs_diff(unet_weights(ckpt_a), unet_weights(ckpt_b)) == 0
    ema_a, ema_b = checkpoint_ema(ckpt_a), checkpoint_ema(ckpt_b)
    assert len(ema_a) == len(ema_b) and all(torch.equal(a, b) for a, b in zip(ema_a, ema_b))
    opt_a = torch.load(ckpt_a / "optimizer.bin", weights_only=False)["state"]
    opt_b = torch.load(ckpt_b / "optimizer.bin", weights_only=False)["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_b for k in opt_b[i])
    assert max_abs_diff(unet_weights(out / "unet"), unet_weights(tmp_path / "straight" / "unet")) == 0
    steps_a = [r["step"] for r in _metrics(out)]
    assert steps_a == sorted(set(steps_a)) and steps_a[-1] == 16  # no duplicated rows
    losses_a = [r.get("train_loss") for r in _metrics(out)]
    losses_b = [r.get("train_loss") for r in _metrics(tmp_path / "straight")]
    assert losses_a == losses_b


def test_rerun_without_resume_is_refused_and_resume_of_a_finished_run_is_a_no_op(tiny, tmp_path):
    data, base = tiny
    out = tmp_path / "model"
    config = tiny_config(max_steps=2, validate_every=2)
    train(data, base, out, config, progress=False)
    before = unet_weights(out / "unet")
    with pytest.raises(TrainError, match="--resume"):
        train(data, base, out, config, progress=False)
    again = train(data, base, out, config, resume=True, progress=False)
    assert again.steps == 2
    # The CLI's --resume continues with the run's saved config, not today's defaults.
    from click.testing import CliRunner

    from photogenic.pipeline.cli import cli

    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--base-model", str(base),
                                      "--out", str(out), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "reached max steps at step 2" in result.output
    assert max_abs_diff(unet_weights(out / "unet"), before) == 0
    with pytest.raises(TrainError, match="learning_rate"):
        train(data, base, out, tiny_config(max_steps=2, learning_rate=1.0), resume=True,
              progress=False)


def test_uncached_training_matches_cached(tiny, tmp_path):
    data, base = tiny
    cached = train(data, base, tmp_path / "a", tiny_config(max_steps=2), progress=False)
    plain = train(data, base, tmp_path / "b", tiny_config(max_steps=2, latent_cache=False),
                  progress=False)
    la = [r["train_loss"] for r in _metrics(Path(cached.out_dir)) if "train_loss" in r]
    lb = [r["train_loss"] for r in _metrics(Path(plain.out_dir)) if "train_loss" in r]
    assert np.allclose(la, lb, rtol=1e-4)
    assert not list(ModelDir(tmp_path / "b").latent_cache.glob("*.safetensors"))


def test_two_processes_under_torch_distributed(tiny, tmp_path):
    """The same entry point `accelerate launch` starts, here as 2 CPU processes (gloo)."""
    from diffusers import DiffusionPipeline

    data, base = tiny
    config_file = _write_config(tmp_path / "train.toml",
                                **tiny_config(max_steps=2, validate_every=2).model_dump(
                                    exclude_none=True))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "photogenic.training.cli",
           *_train_cli(data, base, out, config_file)[3:]]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("reached max steps") == 1  # one summary, from rank 0
    run = json.loads((out / "training_state" / "run.json").read_text())
    assert run["devices"] == 2 and run["gradient_accumulation"] == 1
    assert run["effective_batch"] == 4
    assert [r["step"] for r in _metrics(out)] == [0, 1, 2]
    assert isinstance(DiffusionPipeline.from_pretrained(out).unet.config.sample_size, int)
