"""Aesthetic score: an MLP head on the L2-normalised CLIP image embedding.

Same architecture and state-dict keys as LAION's improved aesthetic predictor
(`sac+logos+ava1-l14-linearMSE.pth`: Linear 768-1024, Dropout 0.2, Linear 1024-128, Dropout 0.2,
Linear 128-64, Dropout 0.1, Linear 64-16, Linear 16-1, keys `layers.0.weight` ... `layers.7.bias`),
so LAION's `.pth` files load as they are, and heads trained by `photogenic aesthetic train` load
in LAION's code. The input width is read from the state dict (768 for ViT-L/14, 512 for ViT-B/32).
Embeddings must be L2-normalised first: unnormalised ones give scores above 10 (a common bug).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, FilterSkipped, Histogram, Need, Sample


def build_head(input_size: int = 768):
    """LAION's MLP; dropout layers sit at the same indices so the state-dict keys match."""
    from torch import nn

    class AestheticHead(nn.Module):
        def __init__(self, input_size: int):
            super().__init__()
            self.input_size = input_size
            self.layers = nn.Sequential(
                nn.Linear(input_size, 1024),
                nn.Dropout(0.2),
                nn.Linear(1024, 128),
                nn.Dropout(0.2),
                nn.Linear(128, 64),
                nn.Dropout(0.1),
                nn.Linear(64, 16),
                nn.Linear(16, 1),
            )

        def forward(self, x):
            return self.layers(x)

    return AestheticHead(input_size)


HEAD_KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]


def read_state_dict(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"[filters.aesthetic] head not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # Lightning-style checkpoints
        state = state["state_dict"]
    missing = [k for k in HEAD_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path} is not a LAION-format aesthetic head: missing keys {missing[:4]}")
    return {k: state[k] for k in HEAD_KEYS}  # extra keys (e.g. our metadata) are ignored


def load_head(path: str | Path):
    state = read_state_dict(path)
    head = build_head(int(state["layers.0.weight"].shape[1]))
    head.load_state_dict(state)
    head.eval()
    return head


def head_metadata(path: str | Path) -> dict[str, Any]:
    """What `aesthetic train` recorded beside the head (`<head>.json`), if anything."""
    meta = Path(str(path) + ".json")
    return json.loads(meta.read_text()) if meta.exists() else {}


def embedding_cost_of(embedding_model: str | None) -> float:
    """Seconds per image of the CLIP embedding a head needs, from the model name `aesthetic train`
    recorded (`<model>` or `<model>/<pretrained>`); unknown or unrecorded: ViT-L-14's."""
    from photogenic.filters.clip import EMBEDDING_COST

    name = (embedding_model or "").split("/")[0]
    return EMBEDDING_COST.get(name, EMBEDDING_COST["ViT-L-14"])


def score_embeddings(head, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    import torch

    # In float64, rounded to float32 at the end: a float32 matmul's last bits depend on how many
    # rows share the call, so a row's score would depend on its batch (and on the cascade's order).
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # LAION's head expects unit vectors
    head64 = head if next(head.parameters()).dtype == torch.float64 else copy.deepcopy(head).double()
    out = []
    with torch.inference_mode():
        for begin in range(0, len(x), batch_size):
            out.append(head64(torch.from_numpy(x[begin:begin + batch_size])).squeeze(-1).numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class AestheticFilter(BaseFilter):
    name: ClassVar[str] = "aesthetic"
    reject_reason: ClassVar[str] = "aesthetic"
    need: ClassVar[Need] = Need.EMBEDDING
    # The MLP itself costs ~0.04 ms/image (bench/filters.py); what it waits for is the shared CLIP
    # embedding: that of the model the head was trained on (its `<head>.json`), else ViT-L-14's
    # (LAION's heads are ViT-L-14 heads). Set per instance in __init__.
    cost_hint: ClassVar[float] = 5.3
    columns: ClassVar[dict[str, pa.DataType]] = {"aesthetic_score": pa.float32()}
    histograms: ClassVar[tuple[Histogram, ...]] = (
        Histogram("aesthetic_score", "aesthetic_score", (("min_score", "min_score"),)),
    )

    class Config(FilterConfig):
        head: str | None = None  # path to a LAION-format .pth/.safetensors; None: skipped
        min_score: float | None = None

    @classmethod
    def lineage_models(cls, section: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
        return {"aesthetic_head": section.get("head")}

    def __init__(self, head: str | None = None, min_score: float | None = None):
        if not head:
            raise FilterSkipped(
                "no aesthetic head: set [filters.aesthetic] head to a LAION-format .pth "
                "(e.g. sac+logos+ava1-l14-linearMSE.pth for ViT-L-14) or train one with `photogenic aesthetic train`"
            )
        self.head_path, self.min_score = head, min_score
        self.head = load_head(head).double()  # a bad file fails at job start; float64: see score_embeddings
        self.metadata = head_metadata(head)
        self.cost_hint = embedding_cost_of(self.metadata.get("embedding_model"))

    @property
    def rejects(self) -> bool:
        return self.min_score is not None

    @property
    def meaningless(self) -> bool:
        from photogenic.filters.clip import active_embedder

        embedder = active_embedder()
        return bool(embedder and embedder.meaningless)

    def setup(self) -> None:
        from photogenic.filters.runtime import set_torch_threads

        set_torch_threads()

    def bind_embedder(self, embedder) -> None:
        """The cascade hands over its embedder after setting it up (a config check for this filter)."""
        self.check_embedder(embedder)

    def check_embedder(self, embedder) -> None:
        """Refuse an embedder of the wrong width before any row is scored (a config error)."""
        if embedder is not None and embedder.dim != self.head.input_size:
            raise ValueError(f"aesthetic head {self.head_path} takes {self.head.input_size}-d CLIP embeddings but "
                             f"[filters.clip] model {embedder.model_name!r} gives {embedder.dim}-d ones: "
                             "use the CLIP model the head was trained on")

    def score(self, samples: list[Sample]) -> dict[str, list]:
        dim = self.head.input_size
        for s in samples:
            if s.image_embedding is None or s.image_embedding.shape[-1] != dim:
                got = None if s.image_embedding is None else s.image_embedding.shape[-1]
                raise ValueError(f"aesthetic head {self.head_path} takes {dim}-d CLIP embeddings, got {got}: "
                                 "use the CLIP model the head was trained on")
        scores = score_embeddings(self.head, np.stack([s.image_embedding for s in samples])) if samples else []
        return {"aesthetic_score": [float(v) for v in scores]}

    def decide_one(self, row: dict[str, Any]) -> str | None:
        if self.min_score is None or row["aesthetic_score"] is None:
            return None
        if row["aesthetic_score"] < self.min_score:
            return f"aesthetic_score {row['aesthetic_score']:.2f} < {self.min_score}"
        return None


def score_saved_embeddings(head_file: str | Path, embeddings: str | Path) -> tuple[list[str], np.ndarray, Any]:
    """(keys, scores, head) of a head over embeddings saved by `photogenic filter --save-embeddings`."""
    from photogenic.filters.clip import read_embeddings

    keys, vectors, _ = read_embeddings(embeddings)
    head = load_head(head_file)
    if len(keys) and head.input_size != vectors.shape[1]:
        raise ValueError(f"head {head_file} takes {head.input_size}-d embeddings, "
                         f"{embeddings} holds {vectors.shape[1]}-d ones")
    return keys, score_embeddings(head, vectors), head
