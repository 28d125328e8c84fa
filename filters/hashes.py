"""Perceptual hash (64-bit pHash) for near-duplicate search in select. Never rejects."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from photogenic.filters.base import BaseFilter, Need, Sample
from photogenic.filters.runtime import LazyModule

imagehash = LazyModule("imagehash")  # loaded on first use: the registry imports this module for its columns


def phash64(image) -> int:
    """pHash as a signed int64 (Arrow and DuckDB have no uint64 XOR/popcount pitfalls this way)."""
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return int(np.array(value, dtype=np.uint64).astype(np.int64))


class PerceptualHashFilter(BaseFilter):
    name: ClassVar[str] = "phash"
    reject_reason: ClassVar[str | None] = None  # never rejects; a failure to hash is `unreadable`
    need: ClassVar[Need] = Need.PIXELS
    cost_hint: ClassVar[float] = 1e-3
    columns: ClassVar[dict[str, pa.DataType]] = {"phash": pa.int64()}

    @property
    def pixel_size(self) -> int:
        return 64

    def score(self, samples: list[Sample]) -> dict[str, list]:
        return {"phash": [phash64(s.image) for s in samples]}
