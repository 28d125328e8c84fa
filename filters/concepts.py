"""Concept tags (`concept`, `concept_score`) for concept-balanced selection. Never rejects.

Two taggers over one taxonomy file (filters/data/concepts.toml): a caption-keyword tagger that
needs no model, and CLIP zero-shot over each concept's prompts (prompt embeddings averaged per
concept, softmax over concepts at CLIP's logit scale 100). With zero-shot on, the two are
averaged where the caption matched a keyword, and zero-shot alone decides otherwise. Rows that
match nothing get the taxonomy's fallback concept (`other`).

zero_shot = "auto" uses CLIP only when the cascade's embedder has real weights: with the
built-in `tiny-random` model the tags come from the keywords alone (and say so in the log).
"""
from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample

log = logging.getLogger(__name__)

DEFAULT_TAXONOMY = Path(__file__).parent / "data" / "concepts.toml"
LOGIT_SCALE = 100.0  # CLIP's trained temperature for ViT models


@dataclass(frozen=True)
class Concept:
    name: str
    keywords: tuple[str, ...]
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    concepts: tuple[Concept, ...]
    fallback: str = "other"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    path = Path(path) if path else DEFAULT_TAXONOMY
    if not path.is_file():
        raise FileNotFoundError(f"[filters.concepts] taxonomy not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"taxonomy {path} is not valid TOML: {err}") from None
    unknown = set(data) - {"fallback", "concepts"}
    if unknown:
        raise ValueError(f"taxonomy {path}: unknown top-level keys {sorted(unknown)}")
    concepts = []
    for name, body in (data.get("concepts") or {}).items():
        extra = set(body) - {"keywords", "prompts"}
        if extra:
            raise ValueError(f"taxonomy {path}: concept {name!r} has unknown keys {sorted(extra)}")
        keywords = tuple(k.strip().lower() for k in body.get("keywords", []) if k.strip())
        prompts = tuple(p.strip() for p in body.get("prompts", []) if p.strip())
        if not keywords and not prompts:
            raise ValueError(f"taxonomy {path}: concept {name!r} has neither keywords nor prompts")
        concepts.append(Concept(name, keywords, prompts))
    if not concepts:
        raise ValueError(f"taxonomy {path} defines no [concepts.NAME] sections")
    return Taxonomy(tuple(concepts), data.get("fallback", "other"))


def keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern | None:
    if not keywords:
        return None
    parts = []
    for kw in sorted(keywords, key=len, reverse=True):
        stem, wildcard = (kw[:-1], True) if kw.endswith("*") else (kw, False)
        body = r"\s+".join(re.escape(w) for w in stem.split())
        parts.append(body + (r"\w*" if wildcard else r"(?:s|es)?"))  # plurals match too
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


class KeywordTagger:
    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self.patterns = [keyword_pattern(c.keywords) for c in taxonomy.concepts]

    def probabilities(self, caption: str | None) -> np.ndarray:
        """Share of distinct keyword hits per concept (all zero when nothing matched)."""
        hits = np.zeros(len(self.patterns), np.float32)
        if caption:
            for i, pattern in enumerate(self.patterns):
                if pattern is not None:
                    hits[i] = len({m.lower() for m in pattern.findall(caption)})
        total = hits.sum()
        return hits / total if total else hits


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class ConceptFilter(BaseFilter):
    name: ClassVar[str] = "concepts"
    reject_reason: ClassVar[str | None] = None  # concepts tag, they do not reject
    rejects = False
    columns: ClassVar[dict[str, pa.DataType]] = {"concept": pa.string(), "concept_score": pa.float32()}
    histograms: ClassVar[tuple[Histogram, ...]] = (Histogram("concept_score", "concept_score"),)

    class Config(FilterConfig):
        taxonomy: str | None = None  # None: filters/data/concepts.toml
        zero_shot: Literal["auto", "on", "off"] = "auto"  # auto: only with real CLIP weights
        min_zero_shot_prob: float = 0.3  # below this (and no caption keyword) the row is tagged `other`

    def __init__(self, taxonomy: str | None = None, zero_shot: str = "auto", min_zero_shot_prob: float = 0.3):
        if zero_shot not in ("auto", "on", "off"):
            raise ValueError(f"[filters.concepts] zero_shot must be auto, on or off (got {zero_shot!r})")
        self.taxonomy = load_taxonomy(taxonomy)
        self.keywords = KeywordTagger(self.taxonomy)
        self.zero_shot, self.min_zero_shot_prob = zero_shot, min_zero_shot_prob
        # Zero-shot reads the shared CLIP embedding, so it runs after it; keyword-only is nearly free.
        self.need = Need.CAPTION if zero_shot == "off" else Need.EMBEDDING
        # bench/filters.py: keywords ~0.3-0.8 ms/image; zero-shot waits for the shared embedding and
        # never rejects, so it is ordered last (counted as a ViT-L-14 embedding).
        self.cost_hint = 5e-4 if zero_shot == "off" else 5.3
        self._prompt_cache: dict[str, np.ndarray] = {}
        self._told = False
        self._bound = None

    def bind_embedder(self, embedder) -> None:
        """The cascade's embedder, so prompts are embedded by the same model as the images."""
        self._bound = embedder

    def _embedder(self):
        from photogenic.filters.clip import active_embedder

        return self._bound or active_embedder()

    def use_zero_shot(self) -> bool:
        if self.zero_shot == "off":
            return False
        embedder = self._embedder()
        if embedder is None:
            if self.zero_shot == "on":
                raise RuntimeError("[filters.concepts] zero_shot = \"on\" needs the cascade's CLIP embedder (none set up)")
            return False
        if self.zero_shot == "auto" and embedder.meaningless:
            if not self._told:
                log.warning("concepts: CLIP has random weights (tiny-random); tagging from caption keywords only")
                self._told = True
            return False
        return True

    @property
    def meaningless(self) -> bool:
        embedder = self._embedder()
        return self.zero_shot == "on" and bool(embedder and embedder.meaningless)

    def prompt_matrix(self) -> np.ndarray:
        """(concepts, D) unit vectors: each concept's prompt embeddings averaged (prompt ensembling)."""
        from photogenic.filters.clip import model_label

        embedder = self._embedder()
        label = model_label(embedder)
        if label not in self._prompt_cache:
            rows = []
            for concept in self.taxonomy.concepts:
                prompts = concept.prompts or tuple(f"a photo of {kw}" for kw in concept.keywords[:5])
                mean = embedder.embed_texts(list(prompts)).mean(axis=0)
                rows.append(mean / max(np.linalg.norm(mean), 1e-12))
            self._prompt_cache[label] = np.stack(rows).astype(np.float32)
        return self._prompt_cache[label]

    def score(self, samples: list[Sample]) -> dict[str, list]:
        keyword_probs = np.stack([self.keywords.probabilities(s.caption) for s in samples]) if samples else None
        zero_shot = None
        if samples and self.use_zero_shot():
            if any(s.image_embedding is None for s in samples):
                self._embedder().embed([s for s in samples if s.image_embedding is None])
            images = np.stack([s.image_embedding for s in samples]).astype(np.float32)
            zero_shot = softmax(LOGIT_SCALE * images @ self.prompt_matrix().T)
        concepts, scores = [], []
        names = self.taxonomy.names
        for i in range(len(samples)):
            matched = keyword_probs[i].sum() > 0
            if zero_shot is None:
                probs = keyword_probs[i]
            else:
                probs = 0.5 * keyword_probs[i] + 0.5 * zero_shot[i] if matched else zero_shot[i]
            best = int(np.argmax(probs))  # ties go to the concept listed first
            if not matched and (zero_shot is None or probs[best] < self.min_zero_shot_prob):
                concepts.append(self.taxonomy.fallback)
                scores.append(float(probs[best]) if zero_shot is not None else 0.0)
            else:
                concepts.append(names[best])
                scores.append(float(probs[best]))
        return {"concept": concepts, "concept_score": scores}

    def decide(self, scores: dict[str, list]) -> list[str | None]:
        return [None] * len(scores["concept"])
