"""The filter protocol.

A filter scores a batch of samples into raw columns and then decides pass/fail from its
config thresholds. Scoring and deciding are separate so raw scores are kept and thresholds can
be re-applied later without re-running models. Filters know nothing of Spark: the same objects
run in a plain loop, in Spark's `mapInArrow`, and in tests.

A filter class declares everything the pipeline needs to know about it (its name, reject reason,
score columns, `[filters.NAME]` config model and report histograms); `filters.registry` builds
the config section, the score schema, the reject reasons and the report's charts from those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import numpy as np


class Need(IntEnum):
    """What a filter reads, ordered by the cost of getting it."""

    CAPTION = 0  # text only
    HEADER = 1  # image header (size, format) without decoding pixels
    PIXELS = 2  # decoded RGB pixels (at `pixel_size` on the long side, at least)
    EMBEDDING = 3  # CLIP image/text embeddings (computed once, shared)


class FilterSkipped(Exception):
    """Raised by a filter's constructor when it cannot run as configured (e.g. no aesthetic head)."""


class FilterConfig(BaseModel):
    """The base of a filter's `[filters.NAME]` config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True


@dataclass(frozen=True)
class Histogram:
    """A report histogram over the scores table, with the config thresholds drawn on it."""

    title: str
    expr: str  # SQL expression over the scores table (usually one of the filter's columns)
    # (label, field of this filter's config) for each threshold line
    thresholds: tuple[tuple[str, str], ...] = ()


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
    Config: ClassVar[type[FilterConfig]]  # its `[filters.NAME]` table; fields are constructor kwargs
    histograms: ClassVar[tuple[Histogram, ...]]
    rejects: bool  # False: scores only, never rejects (the cascade runs it last)
    meaningless: bool  # scores come from a randomly initialised model
    embedder: Any  # a CLIP embedder this filter brings, which the cascade may share

    def bind_embedder(self, embedder: Any) -> None:
        """Receive the cascade's shared embedder once it is set up."""

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
    """The base of every filter: protocol defaults, no-op setup, no pixels, per-row `decide_one`.

    `Config` left as `FilterConfig` means "declares no config model": the `[filters.NAME]` table
    is then passed through to the constructor unvalidated (only `enabled` is read).
    """

    name: ClassVar[str] = "base"
    # Reason recorded when `decide` rejects a row; None for filters that never reject.
    reject_reason: ClassVar[str | None] = "base"
    need: ClassVar[Need] = Need.CAPTION
    cost_hint: ClassVar[float] = 0.0
    columns: ClassVar[dict[str, pa.DataType]] = {}
    Config: ClassVar[type[FilterConfig]] = FilterConfig
    histograms: ClassVar[tuple[Histogram, ...]] = ()
    rejects: bool = True
    # Scores are meaningless (e.g. a randomly initialised model): the run records it.
    meaningless: bool = False
    embedder: Any = None

    def bind_embedder(self, embedder: Any) -> None:
        pass

    @classmethod
    def lineage_models(cls, section: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
        """The models behind this filter's scores, for the export's lineage.json, from its recorded
        `[filters.NAME]` table and the installed package versions."""
        return {}

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
