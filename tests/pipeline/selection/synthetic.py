"""Synthetic score tables for the select tests and bench/selection.py (no test functions here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from photogenic.pipeline.core.runio import mark_success, write_parquet_atomic
from photogenic.pipeline.core.schema import SCORE_SCHEMA

CONCEPTS = ("landscape", "portrait", "food", "animal", "architecture", "vehicle", "flower",
            "interior", "street", "sport", "night", "water")


def _flip_bits(values: np.ndarray, rng: np.random.Generator, max_bits: int) -> np.ndarray:
    out = values.view(np.uint64).copy()
    flips = rng.integers(1, max_bits + 1, size=out.size)
    for k in range(max_bits):
        bit = rng.integers(0, 64, size=out.size).astype(np.uint64)
        out ^= np.where(flips > k, np.uint64(1) << bit, np.uint64(0))
    return out.view(np.int64)


def synthetic_scores(n: int, seed: int = 0, start: int = 0, exact_dup: float = 0.02,
                     near_dup: float = 0.04, near_bits: int = 3) -> pa.Table:
    """n score rows: skewed concepts (some null/empty), planted exact and near duplicates,
    engagement of varied reliability (some null likes/views), 10% failed rows."""
    rng = np.random.default_rng(seed * 1_000_003 + start)
    keys = [f"k{start + i:010d}" for i in range(n)]
    weights = 1.0 / np.arange(1, len(CONCEPTS) + 1)
    concept = np.array(CONCEPTS, dtype=object)[rng.choice(len(CONCEPTS), n, p=weights / weights.sum())]
    odd = rng.random(n)
    concept[odd < 0.03] = None
    concept[(odd >= 0.03) & (odd < 0.04)] = ""
    phash = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=n, dtype=np.int64, endpoint=True)
    digest = rng.bytes(32 * n).hex()
    sha = np.array([digest[i * 64:(i + 1) * 64] for i in range(n)], dtype=object)
    source = rng.integers(0, np.maximum(np.arange(n), 1))  # an earlier row to copy from
    kind = rng.random(n)
    exact = (kind < exact_dup) & (np.arange(n) > 0)
    near = (kind >= exact_dup) & (kind < exact_dup + near_dup) & (np.arange(n) > 0)
    sha[exact] = sha[source[exact]]
    phash[exact] = phash[source[exact]]
    phash[near] = _flip_bits(phash[source[near]], rng, near_bits)
    views = np.round(rng.lognormal(6.0, 2.0, n)).astype(np.int64)
    likes = rng.binomial(views, rng.beta(2.0, 40.0, n))
    passed = rng.random(n) >= 0.1
    cols = {
        "key": pa.array(keys),
        "caption": pa.array([f"a photo number {start + i}" for i in range(n)]),
        "passed": pa.array(passed),
        "reject_reason": pa.array(np.where(passed, "", "technical")),
        "sha256": pa.array(sha, pa.string()),
        "phash": pa.array(phash, mask=rng.random(n) < 0.01),
        "concept": pa.array(concept, pa.string()),
        "concept_score": pa.array(rng.random(n).astype(np.float32)),
        "likes": pa.array(likes, mask=rng.random(n) < 0.02),
        "views": pa.array(views, mask=rng.random(n) < 0.05),
        "width": pa.array(np.full(n, 1024, np.int32)),
        "height": pa.array(np.full(n, 768, np.int32)),
        "aspect": pa.array(np.full(n, 1024 / 768, np.float32)),
        "format": pa.array(["JPEG"] * n),
        "bytes": pa.array(rng.integers(50_000, 900_000, n)),
        "sharpness": pa.array(rng.random(n).astype(np.float32) * 500),
        "clip_score": pa.array(rng.random(n).astype(np.float32)),
        "source": pa.array([f"shard-{(start + i) // 10_000:05d}.tar::{start + i}.jpg" for i in range(n)]),
        "shard": pa.array([f"{(start + i) // 10_000:05d}" for i in range(n)]),
    }
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in SCORE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


def write_scores(run_dir: Path, tables: list[pa.Table]) -> Path:
    scores = Path(run_dir) / "scores"
    for i, table in enumerate(tables):
        write_parquet_atomic(table, scores / f"part-{i:05d}.parquet")
    mark_success(scores)
    return Path(run_dir)


def score_rows(rows: list[dict]) -> pa.Table:
    """A score table from a few hand-written rows; unspecified columns null, passed defaults True."""
    full = [{"passed": True, "reject_reason": "", **r} for r in rows]
    return pa.Table.from_pylist(full, schema=SCORE_SCHEMA)


def popcount64(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values.view(np.uint64))


def close_pairs(phash: np.ndarray, hamming: int) -> int:
    """Brute force: how many pairs of the given int64 hashes are within `hamming` bits."""
    found = 0
    for i in range(phash.size - 1):
        found += int((popcount64(phash[i + 1:] ^ phash[i]) <= hamming).sum())
    return found


def water_level_shares(counts: dict[str, int], weights: dict[str, float], target: int) -> dict[str, float]:
    """Independent reference for quotas: bisection on the level L with sum(min(c, L*w)) = T."""
    w = {c: weights.get(c, 1.0) for c in counts}
    total = min(target, sum(n for c, n in counts.items() if w[c] > 0))
    lo, hi = 0.0, float(max(counts.values(), default=0)) / max(min((x for x in w.values() if x > 0), default=1), 1e-12) + 1
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(min(n, mid * w[c]) for c, n in counts.items()) < total:
            lo = mid
        else:
            hi = mid
    return {c: min(n, hi * w[c]) for c, n in counts.items()}
