"""Offensive content: NudeNet's ONNX detector on the pixels, and an editable term list on the caption.

NudeNet (`320n.onnx`, shipped in the `nudenet` wheel) is a YOLO-style detector of body-part
classes. The image-level `nsfw_score` is the highest class confidence over all anchors among the
*exposed* sexual classes (covered parts, faces, feet, bellies and armpits do not count), so it is
in [0, 1] and 0-ish on ordinary photos. The caption check matches a small term list on word
boundaries; the first term found is recorded in `offensive_term`.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample
from photogenic.filters.runtime import onnx_session

DEFAULT_TERMS = Path(__file__).parent / "data" / "offensive_terms.txt"

# NudeNet 3.4 class order (nudenet/nudenet.py `__labels`).
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
NSFW_CLASSES = ("BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
                "MALE_GENITALIA_EXPOSED")
NSFW_INDEX = np.array([NUDENET_LABELS.index(c) for c in NSFW_CLASSES])


def nudenet_model_path() -> str:
    try:
        import nudenet
    except ImportError as err:
        raise RuntimeError(f"the offensive filter needs the nudenet package (pip install nudenet): {err}") from None
    path = Path(nudenet.__file__).parent / "320n.onnx"
    if not path.exists():
        raise FileNotFoundError(f"NudeNet model missing: {path} (reinstall the nudenet wheel)")
    return str(path)


def load_terms(path: str | Path | None) -> list[str]:
    path = Path(path) if path else DEFAULT_TERMS
    if not path.exists():
        raise FileNotFoundError(f"[filters.offensive] terms_file not found: {path}")
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip().lower()
        if term:
            terms.append(term)
    return terms


def terms_pattern(terms: list[str]) -> re.Pattern | None:
    """One case-insensitive regex; whole words only, `word*` matches any ending."""
    if not terms:
        return None
    parts = []
    for term in sorted(set(terms), key=len, reverse=True):
        stem, wildcard = (term[:-1], True) if term.endswith("*") else (term, False)
        body = r"\s+".join(re.escape(w) for w in stem.split())
        parts.append(body + (r"\w*" if wildcard else ""))
    return re.compile(r"(?<!\w)(" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """NudeNet's preprocessing: pad to a square (bottom/right, black), resize, scale to [0, 1], CHW."""
    import cv2

    h, w = rgb.shape[:2]
    side = max(h, w)
    padded = np.zeros((side, side, 3), np.uint8)
    padded[:h, :w] = rgb
    resized = cv2.resize(padded, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized.transpose(2, 0, 1).astype(np.float32) / 255.0


@lru_cache(maxsize=None)
def _session(path: str):
    return onnx_session(path)


class NudeNetScorer:
    """Image-level scores from NudeNet's raw detector output, batched."""

    def __init__(self, size: int = 320, batch_size: int = 16):
        self.session = _session(nudenet_model_path())
        self.input_name = self.session.get_inputs()[0].name
        self.size, self.batch_size = size, batch_size

    def class_scores(self, images) -> np.ndarray:
        """(N, 18) highest confidence per NudeNet class over all anchors, for PIL RGB images."""
        out = []
        for begin in range(0, len(images), self.batch_size):
            chunk = images[begin:begin + self.batch_size]
            batch = np.stack([letterbox(np.asarray(im.convert("RGB")), self.size) for im in chunk])
            raw = self.session.run(None, {self.input_name: batch})[0]  # (N, 4 + classes, anchors)
            out.append(raw[:, 4:, :].max(axis=2))
        return np.concatenate(out) if out else np.zeros((0, len(NUDENET_LABELS)), np.float32)

    def nsfw_scores(self, images) -> list[float]:
        scores = self.class_scores(images)
        return [float(np.clip(v, 0.0, 1.0)) for v in scores[:, NSFW_INDEX].max(axis=1)] if len(scores) else []


class OffensiveFilter(BaseFilter):
    name: ClassVar[str] = "offensive"
    reject_reason: ClassVar[str] = "offensive"
    need: ClassVar[Need] = Need.PIXELS
    cost_hint: ClassVar[float] = 0.095  # bench/filters.py, cascade stage, one thread, shared 2-core machine
    columns: ClassVar[dict[str, pa.DataType]] = {"nsfw_score": pa.float32(), "offensive_term": pa.string()}
    histograms: ClassVar[tuple[Histogram, ...]] = (Histogram("nsfw_score", "nsfw_score", (("max_nsfw", "max_nsfw"),)),)

    class Config(FilterConfig):
        max_nsfw: float = 0.5
        terms_file: str | None = None  # None: the list shipped in filters/data/offensive_terms.txt
        detector_size: int = 320
        batch_size: int = 16

    @classmethod
    def lineage_models(cls, section: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
        return {"nsfw": f"nudenet {versions.get('nudenet', '?')} (320n.onnx)"}

    def __init__(self, max_nsfw: float = 0.5, terms_file: str | None = None, detector_size: int = 320,
                 batch_size: int = 16):
        self.max_nsfw, self.detector_size, self.batch_size = max_nsfw, detector_size, batch_size
        self.terms = load_terms(terms_file)  # a bad path fails here, before any Spark task starts
        self.pattern = terms_pattern(self.terms)
        self.scorer: NudeNetScorer | None = None

    @property
    def pixel_size(self) -> int:
        return self.detector_size

    def setup(self) -> None:
        if self.scorer is None:
            self.scorer = NudeNetScorer(self.detector_size, self.batch_size)

    def caption_term(self, caption: str | None) -> str | None:
        if not caption or self.pattern is None:
            return None
        match = self.pattern.search(caption)
        return " ".join(match.group(1).lower().split()) if match else None

    def score(self, samples: list[Sample]) -> dict[str, list]:
        self.setup()
        return {
            "nsfw_score": self.scorer.nsfw_scores([s.image for s in samples]),
            "offensive_term": [self.caption_term(s.caption) for s in samples],
        }

    def decide_one(self, row: dict[str, Any]) -> str | None:
        if row["offensive_term"]:
            return f"caption term '{row['offensive_term']}'"
        if row["nsfw_score"] is not None and row["nsfw_score"] > self.max_nsfw:
            return f"nsfw_score {row['nsfw_score']:.2f} > {self.max_nsfw}"
        return None
