"""`photogenic select`: dedup, engagement ranking and concept-balanced sampling of passed rows.

RUN/scores/*.parquet  ->  RUN/candidates/part-00000.parquet, _summary.json, _dropped/, _SUCCESS

Steps (the same SQL runs on DuckDB and on Spark; every choice is a function of the data, the
config and the seed, never of an engine's RNG or partitioning, so both return the same rows):
  1. passed rows; concept null/empty -> 'other'; engagement score per row.
  2. exact dedup: one row per sha256, the most engaging (ties: smallest key).
  3. near dedup: pHash pairs within Hamming distance found by banding (pipeline/dedup.py),
     grouped into connected components; one row per component, the most engaging.
  4. optional minimum engagement.
  5. balance: per-concept quotas (water-filling over weights, capped by availability, leftover
     redistributed) filled by engagement rank; or MetaCLIP-style sampling, keep with
     probability t / max(count, t) decided by a seeded hash of the key.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from photogenic.pipeline.core.config import Config, ConfigError, SelectConfig, load_config
from photogenic.pipeline.selection.dedup import band_flips, band_layout, components, probe_radius
from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.core.runio import SUCCESS, is_complete, mark_success, replace_dir, write_json_atomic, write_parquet_atomic
from photogenic.pipeline.core.schema import SCORE_SCHEMA

log = logging.getLogger(__name__)

OTHER_CONCEPT = "other"
HASH_BITS = 60  # seeded hashes are the first 15 hex digits of an md5: integers in [0, 2^60)
CANDIDATE_SCHEMA = pa.schema(
    list(SCORE_SCHEMA)
    + [
        pa.field("engagement", pa.float64()),
        pa.field("concept_rank", pa.int64()),  # 1 = most engaging kept row of its concept
        pa.field("dup_group", pa.string()),  # smallest key among the row's duplicates (itself if none)
        pa.field("dup_size", pa.int64()),  # rows in its duplicate group, itself included
    ]
)
DROPPED_SCHEMA = pa.schema(
    [("key", pa.string()), ("concept", pa.string()), ("reason", pa.string()), ("dup_of", pa.string())]
)
DROP_REASONS = ("exact_duplicate", "near_duplicate", "below_min_engagement", "over_quota", "not_sampled")


class SelectError(RuntimeError):
    pass


# --- engine-neutral pieces --------------------------------------------------------------------


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


def sql_string(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def sql_double(value: float) -> str:
    # A string cast parses to the same double on both engines (a bare 0.1 is DECIMAL in Spark).
    return f"CAST('{float(value)!r}' AS DOUBLE)"


class Dialect:
    """The few SQL spellings that differ between DuckDB and Spark."""

    name = "duckdb"

    def xor(self, a: str, b: str) -> str:
        return f"xor({a}, {b})"

    def shift_right(self, a: str, n: int) -> str:
        return f"({a} >> {n})"

    def hash60(self, expr: str) -> str:
        return f"CAST(concat('0x', substr(md5({expr}), 1, 15)) AS BIGINT)"


def engagement_sql(cfg: SelectConfig, method: str, prior_rate: float) -> str:
    likes = "least(greatest(likes, 0), views)"
    has_rate = "views > 0 AND likes IS NOT NULL"
    if method == "likes":
        return "CAST(greatest(coalesce(likes, 0), 0) AS DOUBLE)"
    if method == "bayes":
        m = float(cfg.bayes_prior_views)
        return (
            f"CASE WHEN {has_rate} THEN (CAST({likes} AS DOUBLE) + {sql_double(m * prior_rate)})"
            f" / (CAST(views AS DOUBLE) + {sql_double(m)}) ELSE {sql_double(prior_rate)} END"
        )
    z = float(cfg.wilson_z)
    n = "CAST(views AS DOUBLE)"
    phat = f"(CAST({likes} AS DOUBLE) / {n})"
    lower = (
        f"({phat} + {sql_double(z * z / 2)} / {n} - {sql_double(z)} * sqrt({phat} * (1 - {phat}) / {n}"
        f" + {sql_double(z * z / 4)} / ({n} * {n}))) / (1 + {sql_double(z * z)} / {n})"
    )
    return f"CASE WHEN {has_rate} THEN {lower} ELSE {sql_double(0.0)} END"


def stats_sql() -> str:
    return """
        SELECT count(*) AS total_rows,
               count(CASE WHEN passed THEN 1 END) AS passed_rows,
               count(DISTINCT CASE WHEN passed THEN key END) AS passed_keys,
               count(CASE WHEN passed AND key IS NULL THEN 1 END) AS null_keys,
               count(CASE WHEN passed AND views > 0 AND likes IS NOT NULL THEN 1 END) AS rows_with_views,
               sum(CASE WHEN passed AND views > 0 AND likes IS NOT NULL
                        THEN least(greatest(likes, 0), views) END) AS sum_likes,
               sum(CASE WHEN passed AND views > 0 AND likes IS NOT NULL THEN views END) AS sum_views
        FROM scores"""


def base_sql(d: Dialect, engagement: str, seed: int) -> str:
    # Only the columns selection needs travel through the plan; the full score rows are joined
    # back for the few selected keys at the end (final_sql), so wide tables stay cheap.
    concept = f"CASE WHEN concept IS NULL OR trim(concept) = '' THEN '{OTHER_CONCEPT}' ELSE concept END"
    return f"""
        SELECT key, sha256, phash, {concept} AS concept, {engagement} AS engagement,
               {d.hash60(f"concat('{int(seed)}:rank:', key)")} AS tie
        FROM scores WHERE passed AND key IS NOT NULL"""


EXACT_GROUP = "coalesce(sha256, concat('#', key))"
EXACT_SQL = f"""
    SELECT b.*,
           row_number() OVER (PARTITION BY {EXACT_GROUP} ORDER BY engagement DESC, key) AS exact_rn,
           first_value(key) OVER (PARTITION BY {EXACT_GROUP} ORDER BY engagement DESC, key) AS exact_keep,
           count(*) OVER (PARTITION BY {EXACT_GROUP}) AS exact_n,
           min(key) OVER (PARTITION BY {EXACT_GROUP}) AS exact_min
    FROM base b"""


def band_rows_sql(d: Dialect, bands: int) -> str:
    parts = []
    for i, offset, mask in band_layout(bands):
        value = "p" if mask == -1 else f"({d.shift_right('p', offset)} & {mask})"
        parts.append(f"SELECT p, {i} AS band, {value} AS v FROM phash_values")
    return " UNION ALL ".join(parts)


def probes_sql(d: Dialect) -> str:
    return f"SELECT a.p, a.band, {d.xor('a.v', 'f.flip')} AS v FROM phash_bands a JOIN band_flips f ON a.band = f.band"


def edges_sql(d: Dialect, hamming: int) -> str:
    return f"""
        SELECT DISTINCT a.p AS p1, b.p AS p2
        FROM phash_probes a JOIN phash_bands b ON a.band = b.band AND a.v = b.v
        WHERE a.p < b.p AND bit_count({d.xor('a.p', 'b.p')}) <= {int(hamming)}"""


# Rows sharing one pHash value are a group even without an edge: distance 0.
REPEATED_PHASH_SQL = "SELECT phash AS p FROM uniq WHERE phash IS NOT NULL GROUP BY phash HAVING count(*) > 1"

NEAR_GROUP = "grp, grp_key"
NEAR_SQL = f"""
    SELECT g.*,
           row_number() OVER (PARTITION BY {NEAR_GROUP} ORDER BY engagement DESC, key) AS near_rn,
           first_value(key) OVER (PARTITION BY {NEAR_GROUP} ORDER BY engagement DESC, key) AS near_keep,
           sum(exact_n) OVER (PARTITION BY {NEAR_GROUP}) AS dup_size,
           min(exact_min) OVER (PARTITION BY {NEAR_GROUP}) AS dup_group
    FROM (SELECT u.*, coalesce(m.root, u.phash) AS grp,
                 CASE WHEN m.root IS NULL THEN u.key END AS grp_key
          FROM uniq u LEFT JOIN near_map m ON u.phash = m.phash) g"""


def kept_condition(cfg: SelectConfig) -> str:
    cond = "near_rn = 1"
    if cfg.min_engagement is not None:
        cond += f" AND engagement >= {sql_double(cfg.min_engagement)}"
    return cond


def kept_sql(cfg: SelectConfig) -> str:
    return f"SELECT * FROM near WHERE {kept_condition(cfg)}"


def ranked_sql(d: Dialect, cfg: SelectConfig, seed: int) -> str:
    sample = ""
    if cfg.balance == "metaclip":
        h = d.hash60(f"concat('{int(seed)}:sample:', k.key)")
        sample = f" JOIN limits l ON k.concept = l.concept WHERE {h} < l.threshold"
    return f"""
        SELECT k.*, row_number() OVER (PARTITION BY k.concept ORDER BY k.engagement DESC, k.tie, k.key)
               AS concept_rank
        FROM kept k{sample}"""


SELECTION_COLUMNS = ("concept", "engagement", "concept_rank", "dup_group", "dup_size")


def final_sql(cfg: SelectConfig) -> str:
    cols = [f"r.{c}" if c in SELECTION_COLUMNS else f"s.{c}" for c in CANDIDATE_SCHEMA.names]
    quota = "" if cfg.balance == "metaclip" else " JOIN limits l ON r.concept = l.concept AND r.concept_rank <= l.quota"
    return f"""
        SELECT {', '.join(cols)} FROM ranked r{quota}
        JOIN scores s ON s.key = r.key AND s.passed
        ORDER BY r.concept, r.concept_rank"""


def dropped_sql(cfg: SelectConfig) -> str:
    parts = [
        "SELECT key, concept, 'exact_duplicate' AS reason, exact_keep AS dup_of FROM exact WHERE exact_rn > 1",
        "SELECT key, concept, 'near_duplicate' AS reason, near_keep AS dup_of FROM near WHERE near_rn > 1",
    ]
    if cfg.min_engagement is not None:
        parts.append(
            "SELECT key, concept, 'below_min_engagement' AS reason, CAST(NULL AS STRING) AS dup_of FROM near"
            f" WHERE near_rn = 1 AND NOT (engagement >= {sql_double(cfg.min_engagement)})"
        )
    if cfg.balance == "metaclip":
        parts.append(
            "SELECT key, concept, 'not_sampled' AS reason, CAST(NULL AS STRING) AS dup_of FROM kept"
            " WHERE key NOT IN (SELECT key FROM ranked)"
        )
    else:
        parts.append(
            "SELECT r.key, r.concept, 'over_quota' AS reason, CAST(NULL AS STRING) AS dup_of FROM ranked r"
            " JOIN limits l ON r.concept = l.concept WHERE r.concept_rank > l.quota"
        )
    return " UNION ALL ".join(parts)


# --- the plan, over any engine ----------------------------------------------------------------


def _score_files(run_dir: Path) -> list[Path]:
    scores = run_dir / "scores"
    if not scores.is_dir():
        raise SelectError(f"{scores} does not exist: run `photogenic filter` first")
    if not is_complete(scores):
        raise SelectError(f"{scores} has no {SUCCESS}: the filter job has not finished (rerun it)")
    files = sorted(p for p in scores.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise SelectError(f"{scores} holds no parquet files")
    missing = [n for n in SCORE_SCHEMA.names if n not in pq.read_schema(files[0]).names]
    if missing:
        raise SelectError(f"{files[0]} lacks score columns {missing}")
    return files


def _counts(table: pa.Table) -> dict[str, int]:
    return {r["concept"]: int(r["n"]) for r in table.to_pylist()}


class _StepTimer:
    """Wraps an engine so each materialize/fetch is logged with its wall time (-v shows it)."""

    def __init__(self, engine):
        self.engine = engine
        self.dialect = engine.dialect
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name):
        method = getattr(self.engine, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                label = f"{name}:{args[0] if args and isinstance(args[0], str) and len(args[0]) < 40 else ''}"
                elapsed = time.perf_counter() - started
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed
                log.info("select step %s %.2fs", label, elapsed)

        return timed


def execute_plan(engine, cfg: SelectConfig, target: int, seed: int, out_dir: Path) -> tuple[dict, dict]:
    """Runs the selection on `engine` (DuckDBEngine or SparkEngine); writes into out_dir.
    Returns (summary, seconds per step)."""
    engine = _StepTimer(engine)
    d = engine.dialect
    stats = engine.fetch(stats_sql()).to_pylist()[0]
    if stats["passed_rows"] - stats["null_keys"] != stats["passed_keys"]:
        raise SelectError("scores hold duplicate keys among passed rows: the key must be unique per row")
    method, prior = _engagement_method(cfg, stats)
    engine.materialize("base", base_sql(d, engagement_sql(cfg, method, prior), seed))
    engine.materialize("exact", EXACT_SQL)
    engine.view("uniq", "SELECT * FROM exact WHERE exact_rn = 1")

    engine.materialize("phash_values", "SELECT DISTINCT phash AS p FROM uniq WHERE phash IS NOT NULL")
    engine.materialize("phash_bands", band_rows_sql(d, cfg.near_dup_bands))
    engine.register("band_flips", band_flips(cfg.near_dup_bands, cfg.near_dup_hamming))
    engine.view("phash_probes", probes_sql(d))
    edges = engine.fetch(edges_sql(d, cfg.near_dup_hamming))
    repeated = engine.fetch(REPEATED_PHASH_SQL).column("p")
    near_map = _near_map(edges, repeated)
    engine.register("near_map", near_map)
    engine.drop("phash_bands")
    engine.materialize("near", NEAR_SQL)
    engine.view("kept", kept_sql(cfg))

    before = _counts(engine.fetch("SELECT concept, count(*) AS n FROM exact GROUP BY concept"))
    after = engine.fetch(
        "SELECT concept, count(CASE WHEN near_rn = 1 THEN 1 END) AS after_dedup,"
        f" count(CASE WHEN {kept_condition(cfg)} THEN 1 END) AS available, count(*) AS uniq"
        " FROM near GROUP BY concept"
    ).to_pylist()
    after_dedup = {c: 0 for c in before} | {r["concept"]: r["after_dedup"] for r in after}
    available = {c: 0 for c in before} | {r["concept"]: r["available"] for r in after}
    n_exact = sum(before.values()) - sum(r["uniq"] for r in after)
    n_near = sum(r["uniq"] for r in after) - sum(after_dedup.values())
    limits, balance_info = _limits(cfg, available, target)
    engine.register("limits", limits)
    engine.materialize("ranked", ranked_sql(d, cfg, seed))
    selected = engine.fetch(final_sql(cfg))
    selected = _conform(selected, CANDIDATE_SCHEMA)
    write_parquet_atomic(selected, out_dir / "part-00000.parquet")
    if cfg.audit:
        engine.write_parquet(dropped_sql(cfg), out_dir / "_dropped", DROPPED_SCHEMA)

    summary = _summary(
        cfg, stats, method, prior, before, after_dedup, available, balance_info, selected,
        n_exact, n_near, edges.num_rows, target, seed,
    )
    return summary, {k: round(v, 3) for k, v in engine.seconds.items()}


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


# --- DuckDB engine ----------------------------------------------------------------------------


class DuckDBEngine:
    """An on-disk DuckDB database in a scratch dir: tables spill there, memory stays bounded."""

    dialect = Dialect()

    def __init__(self, files: list[Path], cfg: SelectConfig, scratch: Path):
        import duckdb

        scratch.mkdir(parents=True, exist_ok=True)
        # In-memory tables spill to temp_directory past memory_limit: out-of-core without the
        # write-ahead log and checkpoints of an on-disk database.
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = {sql_string(cfg.memory_limit)}")
        self.con.execute(f"SET temp_directory = {sql_string(scratch / 'spill')}")
        self.con.execute("SET preserve_insertion_order = false")
        if cfg.threads:
            self.con.execute(f"SET threads = {int(cfg.threads)}")
        paths = ", ".join(sql_string(p) for p in files)
        self.con.execute(f"CREATE VIEW scores AS SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        self._arrow: dict[str, pa.Table] = {}

    def materialize(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")

    def view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def fetch(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def register(self, name: str, table: pa.Table) -> None:
        self._arrow[name] = table  # keep it alive while DuckDB scans it
        self.con.register(f"{name}_arrow", table)
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {name}_arrow")

    def write_parquet(self, sql: str, directory: Path, schema: pa.Schema) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        casts = ", ".join(f"CAST({f.name} AS VARCHAR) AS {f.name}" for f in schema)
        self.con.execute(
            f"COPY (SELECT {casts} FROM ({sql}) ORDER BY key) TO {sql_string(directory / 'part-00000.parquet')} (FORMAT parquet)"
        )

    def close(self) -> None:
        self.con.close()


# --- run ------------------------------------------------------------------------------------


def _fresh_dir(run_dir: Path, stem: str) -> Path:
    return run_dir / f".{stem}.tmp-{uuid.uuid4().hex[:8]}"


def _remove_stale(run_dir: Path) -> None:
    for p in run_dir.glob(".candidates.*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(".select-scratch*"):
        shutil.rmtree(p, ignore_errors=True)


def run_select(
    run_dir: str | Path,
    config: Config | None = None,
    engine: str | None = None,
    target: int | None = None,
    seed: int | None = None,
    master: str | None = None,
    conf: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Selects candidates from RUN/scores into RUN/candidates; returns the summary."""
    config = config or Config()
    cfg = config.select
    run_dir = Path(run_dir)
    engine = engine or cfg.engine
    target = cfg.target if target is None else int(target)
    seed = cfg.seed if seed is None else int(seed)
    if engine not in ("duckdb", "spark"):
        raise SelectError(f"unknown engine {engine!r}: use duckdb or spark")
    if target < 0:
        raise SelectError(f"target must be >= 0, got {target}")
    final = run_dir / "candidates"
    if is_complete(final) and not force:
        log.info("%s is complete; skipping (use --force to redo)", final)
        return {"skipped": True, **_read_summary(final)}
    files = _score_files(run_dir)
    _remove_stale(run_dir)
    tmp = _fresh_dir(run_dir, "candidates")
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    if engine == "duckdb":
        scratch = Path(cfg.temp_directory) if cfg.temp_directory else _fresh_dir(run_dir, "select-scratch")
        runner = DuckDBEngine(files, cfg, scratch)
    else:
        from photogenic.pipeline.selection.engines.spark import SparkEngine

        scratch = None
        runner = SparkEngine(files, config, master, conf)
    try:
        summary, step_seconds = execute_plan(runner, cfg, target, seed, tmp)
    finally:
        runner.close()
        if scratch is not None and not cfg.temp_directory:
            shutil.rmtree(scratch, ignore_errors=True)
    summary["engine"] = engine
    write_json_atomic(summary, tmp / "_summary.json")
    mark_success(tmp)
    failpoint("select.before_publish")
    replace_dir(tmp, final)
    # Timings stay out of _summary.json so that a rerun writes identical files.
    return {**summary, "wall_s": round(time.perf_counter() - started, 3), "step_s": step_seconds}


def _read_summary(directory: Path) -> dict[str, Any]:
    import json

    path = directory / "_summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


@click.command("select")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory holding scores/.")
@click.option("--target", type=int, default=None, help="Rows to select (default: select.target).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default=None, help="Default: select.engine.")
@click.option("--seed", type=int, default=None, help="Seed of the hashed tie-breaks and sampling.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@click.option("--master", default=None, help="Spark master (spark engine only).")
@click.option("--conf", "conf_pairs", multiple=True, help="Spark conf key=value (repeatable).")
@click.option("--force", is_flag=True, help="Redo even when candidates/_SUCCESS exists.")
def select_cmd(run_dir, target, engine, seed, config_path, master, conf_pairs, force) -> None:
    """Dedup, rank by engagement and concept-balance RUN/scores into RUN/candidates."""
    from photogenic.pipeline.core.spark import parse_conf

    try:
        config = load_config(config_path)
        summary = run_select(
            run_dir, config, engine=engine, target=target, seed=seed,
            master=master, conf=parse_conf(conf_pairs), force=force,
        )
    except (ConfigError, SelectError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if summary.get("skipped"):
        click.echo(f"{run_dir}/candidates is complete (selected {summary.get('selected')}); --force to redo")
        return
    dups = summary["duplicates_removed"]
    click.echo(
        f"selected {summary['selected']} of {summary['input']['passed']} passed rows "
        f"({dups['exact']} exact + {dups['near']} near duplicates removed) with {summary['engine']} "
        f"in {summary['wall_s']:.1f}s -> {Path(run_dir) / 'candidates'}"
    )
    for concept, row in summary["concepts"].items():
        click.echo(f"  {concept:<20} {row['passed']:>10} -> {row['selected']:>8}  cut-off {row['engagement_cutoff']}")
