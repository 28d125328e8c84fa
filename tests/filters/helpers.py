"""Shared bits of the model-filter tests: real photos (scikit-image) and text overlays."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import skimage.data
from PIL import Image

from photogenic.filters.base import Sample
from photogenic.pipeline.sample.pool import overlay_text
from photogenic.pipeline.core.schema import POOL_SCHEMA

PHOTOS = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
          for name in ("astronaut", "coffee", "chelsea", "rocket")}
CAPTIONS = {"astronaut": "portrait of a smiling woman astronaut", "coffee": "a cup of coffee on a saucer",
            "chelsea": "a tabby cat looking up", "rocket": "a rocket on the launch pad"}
AD_WORDS = ("summer sale fifty percent off every item today only visit our shop now free delivery "
            "on orders over twenty dollars").split()


def photo(name: str) -> Image.Image:
    return PHOTOS[name].copy()


def with_text(name: str, words: list[str], size: int = 30) -> Image.Image:
    """The sample pool's own overlay: black words on a white banner, PIL's default font."""
    return overlay_text(photo(name), words, size)


def sample(image: Image.Image, caption: str = "a photo", key: str = "k") -> Sample:
    return Sample(key=key, caption=caption, data=None, width=image.width, height=image.height, image=image)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pool_batch(items: list[tuple[str, str | None, bytes | None]]) -> pa.RecordBatch:
    rows = [{"key": k, "caption": c, "image": d, "source": k, "shard": "s", "width": None, "height": None,
             "likes": None, "views": None, "meta": None, "read_error": None} for k, c, d in items]
    return pa.RecordBatch.from_pylist(rows, schema=POOL_SCHEMA)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
