"""Config sections `[export]`, `[train]`, `[eval]` (owned by the training side)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ExportConfig(_Section):
    validation_fraction: float = 0.1
    shard_size: int = 1000


class TrainConfig(_Section):
    batch_size: int = 64
    noise_offset: float = 0.1
    max_steps: int = 5000


class EvalConfig(_Section):
    seed: int = 0
