"""Shared set-up for the trainer tests: a tiny exported set and a tiny base model, CPU-cheap."""
from __future__ import annotations

from pathlib import Path

from photogenic.pipeline.core.config import parse_config
from photogenic.pipeline.export.stage import export_run
from tests.pipeline.export.fake_run import make_fake_run
from photogenic.pipeline.core.config.training import TrainConfig
from photogenic.training.tiny import make_tiny_base

# Small enough for 2 shared cores: 64 px, micro-batch 2, effective batch 4 (accumulation 2).
TINY_TRAIN = dict(
    batch_size=4, micro_batch_size=2, learning_rate=1e-3, lr_warmup_steps=2, max_steps=20,
    validate_every=5, patience=3, validation_timesteps=4, ema_decay=0.9,
)


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY_TRAIN, **overrides})


def make_tiny_set(root: Path) -> tuple[Path, Path]:
    """(export dir, base model dir) under root: 9 real photos, 3 of them held out."""
    run = make_fake_run(root / "fake")
    config = parse_config({"export": {"validation_fraction": 0.25}})
    export = export_run(run, root / "export", config=config).out
    base = make_tiny_base(root / "base")
    return export, base


def unet_weights(folder: Path) -> dict:
    """A diffusers UNet folder's weights, or the model's in an accelerate checkpoint."""
    from safetensors.torch import load_file

    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).exists():
            return load_file(folder / name)
    raise FileNotFoundError(f"no UNet weights in {folder}")


def checkpoint_ema(folder: Path) -> list:
    """The EMA's shadow parameters in an accelerate checkpoint (registered last, after the
    trainer's state and the LR scheduler)."""
    import torch

    return torch.load(folder / "custom_checkpoint_2.pkl", weights_only=False)["shadow_params"]


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
