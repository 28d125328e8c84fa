"""CLIP embeddings (computed once per image, shared) and the CLIP image-text score filter.

`ClipEmbedder` wraps an open_clip model. `pretrained` is an open_clip tag (open_clip downloads it
on machines that reach the hub) or a local checkpoint path. The model name may also carry its own
weights, as open_clip's schemas: `hf-hub:ORG/REPO` (config and weights from a Hugging Face Hub repo,
fetched on first use) or `local-dir:/path` (a folder holding open_clip_config.json and the weights,
e.g. open_clip_model.safetensors or open_clip_pytorch_model.bin: works offline); those take no
`pretrained`. Missing weights are an error naming
what is missing, never a silent fallback to random weights. The one exception is the built-in
model `tiny-random` (filters/data/tiny-random.json: a 2-layer ViT and text transformer, random
weights from a fixed seed, 768-d embeddings like ViT-L/14 so LAION aesthetic heads fit): it runs
the real code path where no weights can be had, and everything scored with it is marked
meaningless. Models load once per process (a module-level cache), so the CLIP, aesthetic and
concept filters and every cascade in a worker share one model and one embedding per image.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample
from photogenic.filters.runtime import set_torch_threads, torch_device

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
TINY_CONFIG = Path(__file__).parent / "data" / "tiny-random.json"
TINY_SEED = 0
MEANINGLESS_NOTE = (
    "CLIP model 'tiny-random' has random weights: clip_score, aesthetic_score and zero-shot "
    "concept numbers from this run are MEANINGLESS (set [filters.clip] model/pretrained to real weights)"
)

# Seconds per image (image + caption embedding) on one thread; bench/filters.py on the shared 2-core
# build machine (cascade-stage figures of the same run: OCR 0.30, NudeNet 0.095). Unknown models
# are assumed as costly as ViT-L-14, so they run after every cheaper filter.
EMBEDDING_COST = {TINY_RANDOM: 0.011, "ViT-B-32": 0.47, "ViT-L-14": 5.3}

_MODELS: dict[tuple, tuple[Any, Any, Any]] = {}  # (model, pretrained, device) -> (model, preprocess, tokenizer)
_ACTIVE: list["ClipEmbedder"] = []
_WARNED: list[bool] = []  # the embedder last set up in this process (concepts use its model)


class MissingWeights(FileNotFoundError):
    """CLIP weights that were asked for cannot be found or fetched."""


HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"  # open_clip's model-name schemas
LOCAL_DIR_CONFIG = "open_clip_config.json"
# The weight files open_clip looks for in a local-dir: folder (open_clip/factory.py
# _find_checkpoint_in_dir takes any *.safetensors, *.bin or *.pth, these first).
LOCAL_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def model_schema(model: str) -> tuple[str | None, str]:
    """("hf-hub" | "local-dir" | None, the rest of the name)."""
    if model.startswith(HF_HUB):
        return "hf-hub", model[len(HF_HUB):]
    if model.startswith(LOCAL_DIR):
        return "local-dir", model[len(LOCAL_DIR):]
    return None, model


def _check_schema_model(model: str, pretrained: str | None) -> None:
    schema, ident = model_schema(model)
    if pretrained:
        raise ValueError(f"[filters.clip] model {model!r} brings its own weights: leave pretrained unset "
                         f"(got {pretrained!r})")
    if schema == "hf-hub":  # checked by form only: the hub is reached when the model loads
        if not _HUB_REPO.match(ident):
            raise ValueError(f"[filters.clip] {model!r} is not hf-hub:ORG/REPO (a Hugging Face Hub repo "
                             "with open_clip_config.json and weights)")
        return
    folder = Path(ident)
    if not ident or not folder.is_dir():
        raise MissingWeights(f"[filters.clip] CLIP model folder not found: {ident or '(empty)'} ({model})")
    config = folder / LOCAL_DIR_CONFIG
    if not config.is_file():
        raise MissingWeights(f"[filters.clip] {folder} has no {LOCAL_DIR_CONFIG} (an open_clip model folder "
                             f"holds it and the weights, e.g. {LOCAL_DIR_WEIGHTS[0]})")
    try:
        if "model_cfg" not in json.loads(config.read_text()):
            raise ValueError("no 'model_cfg' key")
    except ValueError as err:
        raise ValueError(f"[filters.clip] {config} is not an open_clip config: {err}") from None
    # open_clip would build the model with random weights when the folder has none: refuse.
    if not any(p.suffix in (".safetensors", ".bin", ".pth") and p.is_file() for p in folder.iterdir()):
        raise MissingWeights(f"[filters.clip] {folder} has no CLIP weights (expected one of "
                             f"{', '.join(LOCAL_DIR_WEIGHTS)})")


def model_config(model: str) -> dict[str, Any]:
    """open_clip's model config (embed_dim, vision_cfg, text_cfg) for a model name."""
    import open_clip

    _register_tiny()
    schema, ident = model_schema(model)
    if schema == "local-dir":
        return json.loads((Path(ident) / LOCAL_DIR_CONFIG).read_text())["model_cfg"]
    if schema == "hf-hub":
        from open_clip.factory import _get_hf_config

        try:
            return _get_hf_config(ident)["model_cfg"]
        except Exception as err:
            raise MissingWeights(f"[filters.clip] cannot read the config of {model}: {type(err).__name__}: {err}. "
                                 "Without access to the hub, save the model to a folder and use local-dir:PATH") from err
    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(f"[filters.clip] unknown open_clip model {model!r}")
    return config


def _register_tiny() -> None:
    import open_clip

    if TINY_RANDOM not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG)


def check_weights(model: str, pretrained: str | None) -> None:
    """Fail early, naming what is missing: unknown model, missing file, unknown tag, no weights."""
    import open_clip

    _register_tiny()
    if model_schema(model)[0] is not None:
        _check_schema_model(model, pretrained)
        return
    if model == TINY_RANDOM:
        if pretrained:
            raise ValueError(f"[filters.clip] model 'tiny-random' takes no pretrained weights (got {pretrained!r})")
        return
    if model not in open_clip.list_models():
        raise ValueError(f"[filters.clip] unknown open_clip model {model!r}; e.g. ViT-B-32, ViT-L-14, 'tiny-random', "
                         "hf-hub:ORG/REPO or local-dir:/path/to/open_clip/folder")
    if not pretrained:
        raise MissingWeights(
            f"[filters.clip] model {model!r} needs weights: set pretrained to an open_clip tag "
            f"({', '.join(open_clip.list_pretrained_tags_by_model(model)[:6]) or 'none known'}) or to a local "
            "checkpoint file; only 'tiny-random' runs without weights"
        )
    looks_like_path = any(sep in pretrained for sep in "/\\") or Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"}
    if looks_like_path and not Path(pretrained).is_file():
        raise MissingWeights(f"[filters.clip] CLIP checkpoint not found: {pretrained} (model {model})")
    if not looks_like_path and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        raise MissingWeights(
            f"[filters.clip] {pretrained!r} is neither a file nor an open_clip tag of {model!r} "
            f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'})"
        )


def load_model(model: str, pretrained: str | None, device: str):
    """(model, preprocess, tokenizer), cached per process."""
    key = (model, pretrained, device)
    if key in _MODELS:
        return _MODELS[key]
    import open_clip
    import torch

    check_weights(model, pretrained)
    if model == TINY_RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)  # same random weights in every process and run
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, device="cpu")
        net = net.to(device)
    else:
        try:
            # A schema name (hf-hub:, local-dir:) brings its config and weights; pretrained is None.
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
        except Exception as err:
            raise MissingWeights(
                f"[filters.clip] could not load CLIP weights {pretrained!r} for {model!r}: {type(err).__name__}: {err}. "
                "Without access to the model hub, download the checkpoint elsewhere and set pretrained to its path."
            ) from err
    net.eval()
    _MODELS[key] = (net, preprocess, open_clip.get_tokenizer(model))
    return _MODELS[key]


def _normalise(x) -> np.ndarray:
    x = x.float().cpu().numpy()
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ClipEmbedder:
    """Sets `sample.image_embedding` and `sample.text_embedding` (L2-normalised float32)."""

    def __init__(self, model: str = TINY_RANDOM, pretrained: str | None = None, batch_size: int = 32,
                 device: str = "auto"):
        check_weights(model, pretrained)  # a typo fails at job start, not inside a Spark task
        self.model_name, self.pretrained, self.batch_size, self.device_name = model, pretrained, batch_size, device
        self.model = self.preprocess = self.tokenizer = None

    @property
    def meaningless(self) -> bool:
        return self.model_name == TINY_RANDOM

    @property
    def image_size(self) -> int:
        size = model_config(self.model_name)["vision_cfg"]["image_size"]
        return max(size) if isinstance(size, (list, tuple)) else int(size)

    @property
    def dim(self) -> int:
        return int(model_config(self.model_name)["embed_dim"])

    def setup(self) -> None:
        if self.model is None:
            set_torch_threads()
            self.device = torch_device(self.device_name)
            self.model, self.preprocess, self.tokenizer = load_model(self.model_name, self.pretrained, self.device)
            if self.meaningless and not _WARNED:
                log.warning(MEANINGLESS_NOTE)
                print(f"photogenic: {MEANINGLESS_NOTE}", file=sys.stderr)
                _WARNED.append(True)  # once per process, however many cascades share the model
        if self not in _ACTIVE:
            _ACTIVE[:] = [self]

    def embed_images(self, images) -> np.ndarray:
        import torch

        self.setup()
        out = []
        for begin in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[begin:begin + self.batch_size]])
            with torch.inference_mode():
                out.append(_normalise(self.model.encode_image(batch.to(self.device))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        self.setup()
        out = []
        for begin in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[begin:begin + self.batch_size]))
            with torch.inference_mode():
                out.append(_normalise(self.model.encode_text(tokens.to(self.device))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed(self, samples: list[Sample]) -> None:
        images = self.embed_images([s.image for s in samples])
        has_caption = [bool(s.caption and s.caption.strip()) for s in samples]
        texts = self.embed_texts([s.caption for s, ok in zip(samples, has_caption) if ok])
        text_iter = iter(texts)
        for s, image_vec, ok in zip(samples, images, has_caption):
            s.image_embedding = image_vec
            s.text_embedding = next(text_iter) if ok else None


def shared_embedder(model: str = TINY_RANDOM, pretrained: str | None = None, batch_size: int = 32,
                    device: str = "auto") -> ClipEmbedder:
    """An embedder over the process-wide model cache (construction is cheap; the model loads once)."""
    return ClipEmbedder(model=model, pretrained=pretrained, batch_size=batch_size, device=device)


def active_embedder() -> ClipEmbedder | None:
    """The embedder the cascade set up in this process, if any (concepts embed their prompts with it)."""
    return _ACTIVE[0] if _ACTIVE else None


# -- saved embeddings (--save-embeddings) ----------------------------------------------------------

EMBEDDING_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("model", pa.string()),  # "<model>/<pretrained>", so embeddings of different models never mix
    ("image_embedding", pa.list_(pa.float32())),
    ("text_embedding", pa.list_(pa.float32())),  # null when the caption was empty
])


def embedding_batch(samples: list[Sample], model_label: str) -> pa.RecordBatch:
    """The embeddings the cascade computed for these samples (rows without one are left out)."""
    rows = [s for s in samples if s.image_embedding is not None]
    return pa.RecordBatch.from_pydict({
        "key": [s.key for s in rows],
        "model": [model_label] * len(rows),
        "image_embedding": [s.image_embedding.astype(np.float32).tolist() for s in rows],
        "text_embedding": [None if s.text_embedding is None else s.text_embedding.astype(np.float32).tolist() for s in rows],
    }, schema=EMBEDDING_SCHEMA)


def model_label(embedder: ClipEmbedder) -> str:
    if model_schema(embedder.model_name)[0] is not None:  # the name says where the weights are
        return embedder.model_name
    return f"{embedder.model_name}/{embedder.pretrained or 'random'}"


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray, str | None]:
    """(keys, (N, D) float32 image embeddings, model label) from a parquet file or a folder of them."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"no embeddings parquet at {path} (write them with `photogenic filter --save-embeddings`)")
    table = pa.concat_tables([pq.read_table(f, columns=["key", "image_embedding"] + (
        ["model"] if "model" in pq.read_schema(f).names else [])) for f in files])
    keys = table.column("key").to_pylist()
    vectors = np.asarray(table.column("image_embedding").to_pylist(), dtype=np.float32)
    models = set(table.column("model").to_pylist()) if "model" in table.column_names else {None}
    if len(models) > 1:
        raise ValueError(f"{path} mixes embeddings of several models: {sorted(map(str, models))}")
    return keys, vectors, next(iter(models))


# -- the filter ------------------------------------------------------------------------------------


class ClipFilter(BaseFilter):
    name: ClassVar[str] = "clip"
    reject_reason: ClassVar[str] = "clip"
    need: ClassVar[Need] = Need.EMBEDDING
    # Seconds per image of the shared embedding (image + caption), which this filter triggers when it
    # runs first among the embedding filters; bench/filters.py, one thread, shared 2-core machine.
    # Real architectures were timed with random weights (speed does not depend on their values).
    cost_hint: ClassVar[float] = 0.011
    columns: ClassVar[dict[str, pa.DataType]] = {"clip_score": pa.float32()}
    histograms: ClassVar[tuple[Histogram, ...]] = (Histogram("clip_score", "clip_score", (("min_score", "min_score"),)),)

    class Config(FilterConfig):
        # An open_clip model name, or hf-hub:ORG/REPO / local-dir:/path (which bring their weights).
        model: str = "tiny-random"
        pretrained: str | None = None  # open_clip tag or a local checkpoint path
        min_score: float | None = None  # None: scored, not thresholded
        min_score_fraction: float | None = None
        batch_size: int = 32
        device: str = "auto"

    @classmethod
    def lineage_models(cls, section: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
        return {"clip": {"model": section.get("model"), "pretrained": section.get("pretrained")}}

    def __init__(self, model: str = TINY_RANDOM, pretrained: str | None = None, min_score: float | None = None,
                 min_score_fraction: float | None = None, batch_size: int = 32, device: str = "auto"):
        if min_score is not None and min_score_fraction is not None:
            raise ValueError("[filters.clip] set min_score or min_score_fraction, not both")
        if min_score_fraction is not None and not 0 < min_score_fraction < 1:
            raise ValueError("[filters.clip] min_score_fraction must be in (0, 1)")
        self.min_score, self.min_score_fraction = min_score, min_score_fraction
        self.embedder = shared_embedder(model, pretrained, batch_size, device)
        self.cost_hint = EMBEDDING_COST.get(model, EMBEDDING_COST["ViT-L-14"])

    @property
    def rejects(self) -> bool:
        """Whether this filter can reject at all (the cascade can run non-rejecting filters last)."""
        return self.min_score is not None

    @property
    def meaningless(self) -> bool:
        return self.embedder.meaningless

    @property
    def pixel_size(self) -> int:
        return self.embedder.image_size

    def setup(self) -> None:
        self.embedder.setup()

    def score(self, samples: list[Sample]) -> dict[str, list]:
        if any(s.image_embedding is None for s in samples):  # standalone use, outside a cascade
            self.embedder.embed([s for s in samples if s.image_embedding is None])
        return {"clip_score": [
            None if s.text_embedding is None else float(np.dot(s.image_embedding, s.text_embedding)) for s in samples
        ]}

    def decide_one(self, row: dict[str, Any]) -> str | None:
        # min_score_fraction (keep the top share) needs every score at once: select applies it.
        if self.min_score is None or row["clip_score"] is None:
            return None
        if row["clip_score"] < self.min_score:
            return f"clip_score {row['clip_score']:.3f} < {self.min_score}"
        return None
