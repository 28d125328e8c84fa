"""The filter protocol.

A filter scores a batch of samples into raw columns and then decides pass/fail from its
config thresholds. Scoring and deciding are separate so raw scores are kept and thresholds can
be re-applied later without re-running models. Filters know nothing of Spark: the same objects
run in a plain loop, in Spark's `mapInArrow`, and in tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa


class Need(IntEnum):
    """What a filter reads, ordered by the cost of getting it."""

    CAPTION = 0  # text only
    HEADER = 1  # image header (size, format) without decoding pixels
    PIXELS = 2  # decoded RGB pixels (at `pixel_size` on the long side, at least)
    EMBEDDING = 3  # CLIP image/text embeddings (computed once, shared)


class FilterSkipped(Exception):
    """Raised by a filter's constructor when it cannot run as configured (e.g. no aesthetic head)."""


@dataclass
class Sample:
    """One pool row as it moves through the cascade. Filled lazily, cheapest parts first."""

    key: str
    caption: str | None
    data: bytes | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    image: Any = None  # PIL.Image.Image in RGB, decoded once at the cascade's decode size
    image_embedding: np.ndarray | None = None  # L2-normalised
    text_embedding: np.ndarray | None = None  # L2-normalised
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Filter(Protocol):
    name: ClassVar[str]
    reject_reason: ClassVar[str]
    need: ClassVar[Need]
    # Seconds per image on one CPU core; the cascade orders filters by it. `bench/filters.py`
    # measures the real figures.
    cost_hint: ClassVar[float]
    # Raw score columns this filter writes (name -> Arrow type). Null where it did not run.
    columns: ClassVar[dict[str, pa.DataType]]

    @property
    def pixel_size(self) -> int:
        """Long side, in pixels, this filter needs decoded (0 if it reads no pixels)."""

    def setup(self) -> None:
        """Load models; called once per worker process before the first batch."""

    def score(self, samples: list[Sample]) -> dict[str, list]:
        """Raw scores for each sample: one list per column, aligned with `samples`."""

    def decide(self, scores: dict[str, list]) -> list[str | None]:
        """Per sample: None to pass, else a short human-readable reason detail."""


class BaseFilter:
    """Convenience base: no-op setup, no pixels, per-row `decide_one`."""

    name: ClassVar[str] = "base"
    reject_reason: ClassVar[str] = "base"
    need: ClassVar[Need] = Need.CAPTION
    cost_hint: ClassVar[float] = 0.0
    columns: ClassVar[dict[str, pa.DataType]] = {}
    # Scores are meaningless (e.g. a randomly initialised model): the run records it.
    meaningless: bool = False

    @property
    def pixel_size(self) -> int:
        return 0

    def setup(self) -> None:
        pass

    def score(self, samples: list[Sample]) -> dict[str, list]:
        raise NotImplementedError

    def decide(self, scores: dict[str, list]) -> list[str | None]:
        n = len(next(iter(scores.values()))) if scores else 0
        rows = [{k: v[i] for k, v in scores.items()} for i in range(n)]
        return [self.decide_one(r) for r in rows]

    def decide_one(self, row: dict[str, Any]) -> str | None:
        return None
