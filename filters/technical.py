"""Technical quality on a small grey decode: sharpness (variance of the Laplacian), exposure, contrast."""
from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np
import pyarrow as pa

from filters.base import BaseFilter, Need, Sample


def grey_at(image, long_side: int) -> np.ndarray:
    grey = image.convert("L")
    scale = long_side / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))))
    return np.asarray(grey, dtype=np.float32)


def sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


class TechnicalFilter(BaseFilter):
    name: ClassVar[str] = "technical"
    reject_reason: ClassVar[str] = "technical"
    need: ClassVar[Need] = Need.PIXELS
    cost_hint: ClassVar[float] = 2e-3
    columns: ClassVar[dict[str, pa.DataType]] = {
        "sharpness": pa.float32(),
        "brightness": pa.float32(),
        "contrast": pa.float32(),
    }

    def __init__(self, min_sharpness: float = 40.0, measure_size: int = 512, min_brightness: float = 0.0,
                 max_brightness: float = 255.0, min_contrast: float = 0.0):
        self.min_sharpness, self.measure_size = min_sharpness, measure_size
        self.min_brightness, self.max_brightness, self.min_contrast = min_brightness, max_brightness, min_contrast

    @property
    def pixel_size(self) -> int:
        return self.measure_size

    def score(self, samples: list[Sample]) -> dict[str, list]:
        cols: dict[str, list] = {"sharpness": [], "brightness": [], "contrast": []}
        for s in samples:
            grey = grey_at(s.image, self.measure_size)
            cols["sharpness"].append(sharpness(grey))
            cols["brightness"].append(float(grey.mean()))
            cols["contrast"].append(float(grey.std()))
        return cols

    def decide_one(self, row: dict[str, Any]) -> str | None:
        if row["sharpness"] < self.min_sharpness:
            return f"sharpness {row['sharpness']:.1f} < {self.min_sharpness}"
        if not self.min_brightness <= row["brightness"] <= self.max_brightness:
            return f"brightness {row['brightness']:.0f} outside [{self.min_brightness}, {self.max_brightness}]"
        if row["contrast"] < self.min_contrast:
            return f"contrast {row['contrast']:.1f} < {self.min_contrast}"
        return None
