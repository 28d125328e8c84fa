"""The source of a filter plugin, written by tests into a folder outside the project."""
from __future__ import annotations

from pathlib import Path

WORD_FILTER = '''
"""A filter plugin from outside the project: caption length, and rejects captions with some words."""
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, Field

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample


class WordFilter(BaseFilter):
    name = "wordy"
    reject_reason = "plugin_words"
    need = Need.CAPTION
    cost_hint = 1e-6  # the cheapest filter: runs first
    columns: ClassVar[dict] = {"plugin_caption_len": pa.int32()}
    histograms = (Histogram("caption length (plugin)", "plugin_caption_len", (("max_len", "max_len"),)),)

    class Config(FilterConfig):
        words: list[str] = Field(default_factory=lambda: ["flower"])
        max_len: int = Field(200, ge=1)

    def __init__(self, words: list[str] = ("flower",), max_len: int = 200):
        self.words, self.max_len = [w.lower() for w in words], max_len

    def score(self, samples: list[Sample]) -> dict[str, list]:
        return {"plugin_caption_len": [len(s.caption) if s.caption is not None else None for s in samples],
                "_caption": [s.caption for s in samples]}

    def decide_one(self, row: dict[str, Any]) -> str | None:
        text = (row["_caption"] or "").lower()
        hit = next((w for w in self.words if w in text), None)
        if hit:
            return f"caption has the word {hit!r}"
        if row["plugin_caption_len"] is not None and row["plugin_caption_len"] > self.max_len:
            return f"caption longer than {self.max_len}"
        return None


class NoConfigFilter(BaseFilter):
    """Declares no config model: its table goes to the constructor as it is."""

    name = "bare"
    reject_reason = "bare"
    columns: ClassVar[dict] = {"bare_score": pa.float32()}

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def score(self, samples: list[Sample]) -> dict[str, list]:
        return {"bare_score": [self.scale] * len(samples)}


class PlainModelFilter(BaseFilter):
    """Its config is a plain pydantic model (extra keys ignored, no `enabled`): made strict for it."""

    name = "plainmodel"
    reject_reason = "plainmodel"

    class Config(BaseModel):
        level: int = 1

    def __init__(self, level: int = 1):
        self.level = level

    def score(self, samples: list[Sample]) -> dict[str, list]:
        return {}


class Crashy(BaseFilter):
    """Fails on every caption that contains 'boom'."""

    name = "crashy"
    reject_reason = "crashy"
    columns: ClassVar[dict] = {"crashy_len": pa.int32()}

    def score(self, samples: list[Sample]) -> dict[str, list]:
        if any("boom" in (s.caption or "") for s in samples):
            raise RuntimeError("boom in caption")
        return {"crashy_len": [len(s.caption or "") for s in samples]}


class Undeclared(BaseFilter):
    """Returns a column it does not declare."""

    name = "undeclared"
    reject_reason = "undeclared"

    def score(self, samples: list[Sample]) -> dict[str, list]:
        return {"surprise": [1] * len(samples)}


class NotAFilter:
    name = "nope"


class TakesCaptionReason(WordFilter):
    name = "thief"
    reject_reason = "caption"
    columns: ClassVar[dict] = {}
    histograms = ()


class TakesClipColumn(WordFilter):
    name = "thief"
    reject_reason = "thief"
    columns: ClassVar[dict] = {"clip_score": pa.float32()}
    histograms = ()


class TakesKeyColumn(WordFilter):
    name = "thief"
    reject_reason = "thief"
    columns: ClassVar[dict] = {"key": pa.string()}
    histograms = ()


class TakesBuiltinName(WordFilter):
    name = "geometry"
    reject_reason = "thief"
    columns: ClassVar[dict] = {}
    histograms = ()
'''


def write_plugin(folder: Path, module: str) -> Path:
    """Write the plugin module `module`.py into `folder` (a directory outside the project)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(WORD_FILTER)
    return folder
