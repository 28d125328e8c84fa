"""The selection plan of `photogenic select`, over any engine (engines/base.py):

  1. passed rows; concept null/empty -> 'other'; engagement score per row.
  2. exact dedup: one row per sha256, the most engaging (ties: smallest key).
  3. near dedup: pHash pairs within Hamming distance found by banding (dedup.py), grouped into
     connected components; one row per component, the most engaging.
  4. optional minimum engagement.
  5. balance: per-concept quotas (water-filling over weights, capped by availability, leftover
     redistributed) filled by engagement rank; or MetaCLIP-style sampling, keep with
     probability t / max(count, t) decided by a seeded hash of the key.

Every choice is a function of the data, the config and the seed, never of an engine's RNG or
partitioning, so every engine returns the same rows.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from photogenic.pipeline.core.config import ConfigError, SelectConfig
from photogenic.pipeline.core.layout import DROPPED, SELECTED_PART
from photogenic.pipeline.core.runio import write_parquet_atomic
from photogenic.pipeline.selection import sql
from photogenic.pipeline.selection.dedup import band_flips, band_layout, components, probe_radius
from photogenic.pipeline.selection.engines.base import Engine
from photogenic.pipeline.selection.sql import HASH_BITS

log = logging.getLogger(__name__)


class SelectError(RuntimeError):
    pass


# --- balance: quotas and sampling thresholds ----------------------------------------------------


def allocate_quotas(counts: dict[str, int], weights: dict[str, float], target: int) -> tuple[dict[str, int], dict[str, float]]:
    """Integer quota per concept: water-filling of `target` over weights, capped by counts.

    Concepts capped at their count free their share for the others (repeated until none is
    capped); the real-valued shares are then rounded by largest remainder (ties: concept name),
    so each quota is within one row of its real share and they sum to min(target, available).
    Returns (integer quotas, real shares).
    """
    weight = {c: float(weights.get(c, 1.0)) for c in counts}
    bad = [c for c, w in weight.items() if w < 0 or math.isnan(w)]
    if bad:
        raise ConfigError(f"select.concept_weights must be >= 0: {bad}")
    share = {c: 0.0 for c in counts}
    active = sorted(c for c in counts if counts[c] > 0 and weight[c] > 0)
    remaining = float(min(target, sum(counts[c] for c in active)))
    while active and remaining > 0:
        total_w = sum(weight[c] for c in active)
        capped = [c for c in active if remaining * weight[c] / total_w >= counts[c]]
        if not capped:
            for c in active:
                share[c] = remaining * weight[c] / total_w
            break
        for c in capped:
            share[c] = float(counts[c])
            remaining -= counts[c]
        active = [c for c in active if c not in capped]
    quota = {c: min(counts[c], math.floor(share[c] + 1e-9)) for c in counts}
    total = int(round(sum(share.values())))
    short = total - sum(quota.values())
    order = sorted((c for c in counts if quota[c] < counts[c] and share[c] > 0), key=lambda c: (-(share[c] - quota[c]), c))
    for c in order[: max(short, 0)]:
        quota[c] += 1
    return quota, share


def metaclip_thresholds(counts: dict[str, int], t: float) -> dict[str, int]:
    """Per-concept integer threshold on the 60-bit sample hash: keep if hash < threshold."""
    out = {}
    for concept, n in counts.items():
        p = 1.0 if n <= t else t / n
        out[concept] = min(1 << HASH_BITS, int(p * (1 << HASH_BITS)))
    return out


def metaclip_level(counts: dict[str, int], target: int) -> float:
    """t such that sum(min(count, t)) == target: the expected total equals the target."""
    _, share = allocate_quotas(counts, {}, target)
    uncapped = [share[c] for c in counts if 0 < share[c] < counts[c]]
    return max(uncapped) if uncapped else float(max(counts.values(), default=1))


# --- the plan ------------------------------------------------------------------------------


def _counts(table: pa.Table) -> dict[str, int]:
    return {r["concept"]: int(r["n"]) for r in table.to_pylist()}


class _StepTimer:
    """Wraps an engine so each materialize/fetch is logged with its wall time (-v shows it);
    a `label=` keyword names a step whose first argument is SQL."""

    def __init__(self, engine):
        self.engine = engine
        self.dialect = engine.dialect
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # this process's CPU time (all its threads)

    def __getattr__(self, name):
        method = getattr(self.engine, name)

        def timed(*args, label: str | None = None, **kwargs):
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                if label is None:
                    label = args[0] if args and isinstance(args[0], str) and len(args[0]) < 40 else ""
                label = f"{name}:{label}"
                elapsed, used = time.perf_counter() - started, time.process_time() - cpu
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed
                self.cpu_seconds[label] = self.cpu_seconds.get(label, 0.0) + used
                log.info("select step %s %.2fs (cpu %.2fs)", label, elapsed, used)

        return timed


def execute_plan(engine: Engine, cfg: SelectConfig, target: int, seed: int, out_dir: Path,
                 head: pa.Table | None = None) -> tuple[dict, dict]:
    """Runs the selection on `engine`; writes the candidates (and the audit) into out_dir, the
    candidates folder being built.
    Returns (select's summary, seconds per step: {"wall": {step: s}, "cpu": {step: s}}, the CPU
    seconds being this process's, all threads)."""
    engine = _StepTimer(engine)
    d = engine.dialect
    stats = engine.fetch(sql.stats_sql(d), label="stats").to_pylist()[0]
    expected_keys = stats["passed_rows"] - stats["null_keys"]
    if stats["passed_key_hashes"] != expected_keys:  # a repeated key, or a hash collision: count exactly
        if engine.fetch(sql.KEYS_SQL, label="keys").to_pylist()[0]["passed_keys"] != expected_keys:
            raise SelectError("scores hold duplicate keys among passed rows: the key must be unique per row")
    method, prior = _engagement_method(cfg, stats)
    engagement = sql.engagement_sql(cfg, method, prior)
    blend = _head_blend(engine, cfg, engagement, head) if head is not None else None

    # 1-2. Passed rows, narrow; exact dedup among the rows whose sha256 hash repeats.
    engine.materialize("dup_hashes", sql.dup_hashes_sql(d))
    engine.materialize("base_rows", sql.base_sql(d, engagement, blend))
    engine.view("base", sql.base_view_sql(blend))
    engine.materialize("exact", sql.EXACT_SQL)
    engine.view("uniq", sql.UNIQ_SQL)

    # 3. Near dedup: banded probes per band in the engine, components of the verified pairs.
    engine.materialize("phash_values", sql.PHASH_VALUES_SQL)
    repeated = engine.fetch(sql.REPEATED_PHASH_SQL, label="repeated_phash").column("p")
    n_values = engine.fetch("SELECT count(*) AS n FROM phash_values", label="count_phash").column("n")[0].as_py()
    edges = _near_edges(engine, cfg, n_values)
    engine.register("near_map", _near_map(edges, repeated))
    engine.drop("phash_values")
    engine.materialize("near", sql.NEAR_SQL)
    engine.view("deduped", sql.DEDUPED_SQL)
    engine.view("kept", sql.kept_sql(cfg))

    # 4-5. Counts per concept, quotas, the top of each concept.
    counts = engine.fetch(sql.concept_counts_sql(cfg), label="concept_counts").to_pylist()
    by_what: dict[str, dict[str, int]] = {w: {} for w in ("passed", "exact", "near", "below")}
    for row in counts:
        by_what[row["what"]][row["concept"]] = int(row["n"])
    before = by_what["passed"]
    after_dedup = {c: before[c] - by_what["exact"].get(c, 0) - by_what["near"].get(c, 0) for c in before}
    available = {c: after_dedup[c] - by_what["below"].get(c, 0) for c in before}
    n_exact = sum(by_what["exact"].values())
    n_near = sum(by_what["near"].values())
    limits, balance_info = _limits(cfg, available, target)
    engine.register("limits", limits)
    if cfg.balance != "metaclip":
        max_quota = max(limits.column("quota").to_pylist(), default=0)
        engine.materialize("thresholds", sql.thresholds_sql(d, max_quota))
    engine.materialize("ranked", sql.ranked_sql(d, cfg, seed))
    selected = _conform(engine.fetch(sql.final_sql(cfg), label="final"), sql.CANDIDATE_SCHEMA)
    write_parquet_atomic(selected, out_dir / SELECTED_PART)
    if cfg.audit:
        engine.write_parquet(sql.dropped_sql(cfg), out_dir / DROPPED, sql.DROPPED_SCHEMA, label="dropped")

    summary = _summary(
        cfg, stats, method, prior, before, after_dedup, available, balance_info, selected,
        n_exact, n_near, edges.num_rows, target, seed,
    )
    steps = {k: round(v, 3) for k, v in engine.seconds.items()}
    steps_cpu = {k: round(v, 3) for k, v in engine.cpu_seconds.items()}
    return summary, {"wall": steps, "cpu": steps_cpu}


# Rows of one band's partition: a probe join builds a hash table of about this many values
# (cache-sized), never one of all values (at 10^8 that one would spill, with its probes).
PARTITION_ROWS = 1 << 20
MAX_PARTITION_BITS = 10


def partition_bits(values: int, width: int) -> int:
    """log2 of the number of partitions of a band `width` bits wide holding `values` values."""
    if width > 32 or values <= PARTITION_ROWS:
        return 0
    return min(math.ceil(math.log2(values / PARTITION_ROWS)), width, MAX_PARTITION_BITS)


def _near_edges(engine, cfg: SelectConfig, n_values: int) -> pa.Table:
    """Every pair of distinct pHash values within near_dup_hamming bits (p1 < p2), found band by
    band, partition by partition (sql.band_edges_sql); only the verified pairs come back."""
    d = engine.dialect
    flips = band_flips(cfg.near_dup_bands, cfg.near_dup_hamming)
    engine.register("band_flips", flips)
    flip_band, flip_value = flips.column("band").to_pylist(), flips.column("flip").to_pylist()
    parts = []
    for band, offset, mask in band_layout(cfg.near_dup_bands):
        width = 64 if mask == -1 else mask.bit_length()
        bits = partition_bits(n_values, width)
        label = f"edges_{band}"
        if bits == 0:
            parts.append(engine.fetch(sql.band_edges_sql(d, band, offset, mask, cfg.near_dup_hamming), label=label))
            continue
        engine.materialize(f"band_{band}", sql.band_table_sql(d, offset, mask), label=f"band_{band}")
        band_flip_values = [f for b, f in zip(flip_band, flip_value) if b == band]
        for part in range(1 << bits):
            partition = sql.BandPartition(width=width, bits=bits, part=part)
            query = sql.band_edges_sql(d, band, offset, mask, cfg.near_dup_hamming, partition, band_flip_values)
            parts.append(engine.fetch(query, label=label))
        engine.drop(f"band_{band}")
    schema = pa.schema([("p1", pa.int64()), ("p2", pa.int64())])
    edges = pa.concat_tables([t.select(["p1", "p2"]).cast(schema) for t in parts])
    return edges.group_by(["p1", "p2"]).aggregate([]).select(["p1", "p2"])  # a pair found in two bands


def _head_blend(engine: Engine, cfg: SelectConfig, engagement: str, head: pa.Table) -> sql.HeadBlend:
    engine.register("head_scores", head)
    stats = engine.fetch(sql.engagement_stats_sql(engagement)).to_pylist()[0]
    values = head.column("head_score").to_numpy()
    return sql.HeadBlend(engagement_weight=1.0 - cfg.head_weight, head_weight=cfg.head_weight,
                         engagement_mean=float(stats["mean"] or 0.0), engagement_sd=float(stats["sd"] or 0.0),
                         head_mean=float(values.mean()) if len(values) else 0.0,
                         head_sd=float(values.std()) if len(values) else 0.0)


def dropped_by_reason(cfg: SelectConfig, summary: dict[str, Any]) -> dict[str, int]:
    """Rows of `scores` that did not become candidates, by reason (the reasons of _dropped/, plus
    rows that failed the filters or have no key); with the selected rows they add up to the input."""
    concepts = summary["concepts"].values()
    after_dedup = sum(c["after_dedup"] for c in concepts)
    available = sum(c["available"] for c in concepts)
    passed_with_key = sum(c["passed"] for c in concepts)
    reasons = {
        "not_passed": summary["input"]["rows"] - summary["input"]["passed"],
        "null_key": summary["input"]["passed"] - passed_with_key,
        "exact_duplicate": summary["duplicates_removed"]["exact"],
        "near_duplicate": summary["duplicates_removed"]["near"],
    }
    if cfg.min_engagement is not None:
        reasons["below_min_engagement"] = after_dedup - available
    reasons["not_sampled" if cfg.balance == "metaclip" else "over_quota"] = available - summary["selected"]
    return reasons


def _engagement_method(cfg: SelectConfig, stats: dict[str, Any]) -> tuple[str, float]:
    method = cfg.engagement
    if method != "likes" and not stats["rows_with_views"]:
        log.warning("no passed row has views: engagement falls back to likes")
        return "likes", 0.0
    if method == "bayes" and cfg.bayes_prior_rate is not None:
        return method, float(cfg.bayes_prior_rate)
    if stats["sum_views"]:
        return method, int(stats["sum_likes"]) / int(stats["sum_views"])
    return method, 0.0


def _near_map(edges: pa.Table, repeated: pa.ChunkedArray) -> pa.Table:
    comp = components(edges.select(["p1", "p2"]).cast(pa.schema([("p1", pa.int64()), ("p2", pa.int64())])))
    in_edges = pc.is_in(repeated, value_set=comp.column("phash")) if comp.num_rows else None
    alone = repeated if in_edges is None else pc.filter(repeated, pc.invert(in_edges))
    alone = alone.cast(pa.int64())
    solo = pa.table({"phash": alone, "root": alone})
    return pa.concat_tables([comp, solo.cast(comp.schema)]).combine_chunks()


def _limits(cfg: SelectConfig, available: dict[str, int], target: int) -> tuple[pa.Table, dict[str, Any]]:
    concepts = sorted(available)
    if cfg.balance == "metaclip":
        t = float(cfg.metaclip_t) if cfg.metaclip_t is not None else metaclip_level(available, target)
        thresholds = metaclip_thresholds(available, t)
        table = pa.table({"concept": concepts, "threshold": pa.array([thresholds[c] for c in concepts], pa.int64())})
        return table, {"rule": "metaclip", "t": t, "keep_probability": {c: min(1.0, t / max(available[c], 1)) for c in concepts}}
    quota, share = allocate_quotas(available, cfg.concept_weights, target)
    table = pa.table({"concept": concepts, "quota": pa.array([quota[c] for c in concepts], pa.int64())})
    return table, {"rule": "quota", "quota": quota, "share": {c: round(share[c], 6) for c in concepts}}


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.select(schema.names).cast(schema).combine_chunks()


def _summary(cfg, stats, method, prior, before, after_dedup, available, balance_info, selected,
             n_exact, n_near, n_edges, target, seed) -> dict[str, Any]:
    after = {c: 0 for c in before}
    cutoff: dict[str, float | None] = {c: None for c in before}
    if selected.num_rows:
        grouped = selected.group_by("concept").aggregate([("engagement", "min"), ("key", "count")])
        for row in grouped.to_pylist():
            after[row["concept"]] = row["key_count"]
            cutoff[row["concept"]] = row["engagement_min"]
    concepts = {
        c: {
            "passed": before[c],
            "after_dedup": after_dedup.get(c, 0),
            "available": available[c],
            "selected": after[c],
            "engagement_cutoff": cutoff[c],
        }
        for c in sorted(before)
    }
    return {
        "target": target,
        "seed": seed,
        "input": {"rows": stats["total_rows"], "passed": stats["passed_rows"]},
        "selected": selected.num_rows,
        "duplicates_removed": {"exact": n_exact, "near": n_near},
        "near_dup_search": {
            "hamming": cfg.near_dup_hamming,
            "bands": cfg.near_dup_bands,
            "probe_radius": probe_radius(cfg.near_dup_bands, cfg.near_dup_hamming),
            "complete": True,
            "verified_pairs": n_edges,
        },
        "engagement": {
            "method": method,
            "configured": cfg.engagement,
            "prior_rate": prior if method == "bayes" else None,
            "prior_views": cfg.bayes_prior_views if method == "bayes" else None,
            "rows_with_views": stats["rows_with_views"],
            "min_engagement": cfg.min_engagement,
        },
        "balance": balance_info,
        "concepts": concepts,
        "counts_before": {c: v["passed"] for c, v in concepts.items()},
        "counts_after": {c: v["selected"] for c, v in concepts.items()},
        "engagement_cutoff": {c: v["engagement_cutoff"] for c, v in concepts.items()},
    }
