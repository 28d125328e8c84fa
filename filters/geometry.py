"""Image size and aspect ratio, from the header only (no pixels decoded)."""
from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample


class GeometryFilter(BaseFilter):
    name: ClassVar[str] = "geometry"
    reject_reason: ClassVar[str] = "geometry"
    need: ClassVar[Need] = Need.HEADER
    cost_hint: ClassVar[float] = 1e-5
    columns: ClassVar[dict[str, pa.DataType]] = {"aspect": pa.float32()}
    histograms: ClassVar[tuple[Histogram, ...]] = (
        Histogram("short side (px)", "least(width, height)", (("min_side", "min_side"),)),
        Histogram("aspect", "aspect", (("max_aspect", "max_aspect"),)),
    )

    class Config(FilterConfig):
        min_side: int = 256
        max_aspect: float = 3.0
        # Anything past this is refused before decoding (pixel bombs).
        max_pixels: int = 100_000_000
        max_bytes: int = 50_000_000

    def __init__(self, min_side: int = 256, max_aspect: float = 3.0, **_: Any):
        self.min_side, self.max_aspect = min_side, max_aspect

    def score(self, samples: list[Sample]) -> dict[str, list]:
        aspect = [
            (max(s.width, s.height) / min(s.width, s.height)) if s.width and s.height else None for s in samples
        ]
        return {
            "aspect": aspect,
            "_min_side": [min(s.width, s.height) if s.width and s.height else None for s in samples],
        }

    def decide_one(self, row: dict[str, Any]) -> str | None:
        if row["_min_side"] is None:
            return "no image size"
        if row["_min_side"] < self.min_side:
            return f"short side {row['_min_side']} < {self.min_side}"
        if row["aspect"] > self.max_aspect:
            return f"aspect {row['aspect']:.2f} > {self.max_aspect}"
        return None
