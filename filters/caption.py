"""Caption sanity: missing, empty, too long, or not text (binary junk, mojibake)."""
from __future__ import annotations

import unicodedata
from typing import Any, ClassVar

import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, Need, Sample


def printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\t" or unicodedata.category(ch)[0] in "LNPSZ")
    bad = text.count("\ufffd")  # replacement characters from undecodable bytes
    return max(0.0, (good - bad) / len(text))


class CaptionFilter(BaseFilter):
    name: ClassVar[str] = "caption"
    reject_reason: ClassVar[str] = "caption"
    need: ClassVar[Need] = Need.CAPTION
    cost_hint: ClassVar[float] = 2e-6
    columns: ClassVar[dict[str, pa.DataType]] = {}

    class Config(FilterConfig):
        min_chars: int = 1
        max_chars: int = 2000
        min_words: int = 1
        # Share of characters that must be letters/digits/spaces/punctuation; catches binary junk.
        min_printable_ratio: float = 0.9

    def __init__(self, min_chars: int = 1, max_chars: int = 2000, min_words: int = 1, min_printable_ratio: float = 0.9):
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_words, self.min_printable_ratio = min_words, min_printable_ratio

    def score(self, samples: list[Sample]) -> dict[str, list]:
        return {"_caption": [s.caption for s in samples]}

    def decide_one(self, row: dict[str, Any]) -> str | None:
        text = row["_caption"]
        if text is None:
            return "missing caption"
        stripped = text.strip()
        if len(stripped) < self.min_chars:
            return "empty caption"
        if len(text) > self.max_chars:
            return f"caption too long ({len(text)} > {self.max_chars} chars)"
        if printable_ratio(text) < self.min_printable_ratio:
            return "caption is not text"
        if len(stripped.split()) < self.min_words:
            return f"caption has fewer than {self.min_words} words"
        return None
