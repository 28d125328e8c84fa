"""The SQL of `photogenic select`, one text for DuckDB and Spark: each builder takes the engine's
`Dialect` for the few spellings that differ. The plan (plan.py) runs these in order; the table
names they read (scores, base, exact, uniq, near, kept, ranked, limits, ...) are the plan's.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from photogenic.pipeline.core.config import SelectConfig
from photogenic.pipeline.core.schema import SCORE_SCHEMA
from photogenic.pipeline.selection.dedup import band_layout
from photogenic.pipeline.selection.engines.base import Dialect

OTHER_CONCEPT = "other"
HASH_BITS = 60  # seeded hashes are the first 15 hex digits of an md5: integers in [0, 2^60)
CANDIDATE_SCHEMA = pa.schema(
    list(SCORE_SCHEMA)
    + [
        pa.field("engagement", pa.float64()),
        pa.field("concept_rank", pa.int64()),  # 1 = most engaging kept row of its concept
        pa.field("dup_group", pa.string()),  # smallest key among the row's duplicates (itself if none)
        pa.field("dup_size", pa.int64()),  # rows in its duplicate group, itself included
        pa.field("head_score", pa.float64()),  # the learnt head's score ([select] head), else null
        pa.field("rank_score", pa.float64()),  # what ranked it: engagement, or its blend with the head
    ]
)
DROPPED_SCHEMA = pa.schema(
    [("key", pa.string()), ("concept", pa.string()), ("reason", pa.string()), ("dup_of", pa.string())]
)
DROP_REASONS = ("exact_duplicate", "near_duplicate", "below_min_engagement", "over_quota", "not_sampled")


def sql_double(value: float) -> str:
    # A string cast parses to the same double on both engines (a bare 0.1 is DECIMAL in Spark).
    return f"CAST('{float(value)!r}' AS DOUBLE)"


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


@dataclass(frozen=True)
class HeadBlend:
    """Ranking by `engagement_weight` z(engagement) + `head_weight` z(head score), the head's
    scores coming from the registered table head_scores(key, head_score); a row without a head
    score counts as the head's mean. The means and spreads are measured on the passed rows."""

    engagement_weight: float
    head_weight: float
    engagement_mean: float
    engagement_sd: float
    head_mean: float
    head_sd: float

    def sql(self) -> str:
        e = f"(engagement - {sql_double(self.engagement_mean)}) / {sql_double(self.engagement_sd or 1.0)}"
        h = f"coalesce((head_score - {sql_double(self.head_mean)}) / {sql_double(self.head_sd or 1.0)}, {sql_double(0.0)})"
        return f"{sql_double(self.engagement_weight)} * {e} + {sql_double(self.head_weight)} * {h}"


def engagement_stats_sql(engagement: str) -> str:
    return f"SELECT avg(e) AS mean, stddev_pop(e) AS sd FROM (SELECT {engagement} AS e FROM scores WHERE passed AND key IS NOT NULL) t"


def base_sql(d: Dialect, engagement: str, seed: int, blend: HeadBlend | None = None) -> str:
    # Only the columns selection needs travel through the plan; the full score rows are joined
    # back for the few selected keys at the end (final_sql), so wide tables stay cheap.
    # rank_score orders duplicates' keepers and the rows of a concept: engagement, or its blend
    # with a learnt head (HeadBlend).
    concept = f"CASE WHEN concept IS NULL OR trim(concept) = '' THEN '{OTHER_CONCEPT}' ELSE concept END"
    head = "h.head_score" if blend else "CAST(NULL AS DOUBLE)"
    join = " LEFT JOIN head_scores h ON h.key = s.key" if blend else ""
    return f"""
        SELECT b.*, {blend.sql() if blend else "engagement"} AS rank_score FROM (
            SELECT s.key, s.sha256, s.phash, {concept} AS concept, {engagement} AS engagement,
                   {head} AS head_score, {d.hash60(f"concat('{int(seed)}:rank:', s.key)")} AS tie
            FROM scores s{join} WHERE s.passed AND s.key IS NOT NULL) b"""


EXACT_GROUP = "coalesce(sha256, concat('#', key))"
EXACT_SQL = f"""
    SELECT b.*,
           row_number() OVER (PARTITION BY {EXACT_GROUP} ORDER BY rank_score DESC, key) AS exact_rn,
           first_value(key) OVER (PARTITION BY {EXACT_GROUP} ORDER BY rank_score DESC, key) AS exact_keep,
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
           row_number() OVER (PARTITION BY {NEAR_GROUP} ORDER BY rank_score DESC, key) AS near_rn,
           first_value(key) OVER (PARTITION BY {NEAR_GROUP} ORDER BY rank_score DESC, key) AS near_keep,
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
        SELECT k.*, row_number() OVER (PARTITION BY k.concept ORDER BY k.rank_score DESC, k.tie, k.key)
               AS concept_rank
        FROM kept k{sample}"""


SELECTION_COLUMNS = ("concept", "engagement", "concept_rank", "dup_group", "dup_size", "head_score", "rank_score")


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


# Small steps of the plan between the builders above.
UNIQ_SQL = "SELECT * FROM exact WHERE exact_rn = 1"
PHASH_VALUES_SQL = "SELECT DISTINCT phash AS p FROM uniq WHERE phash IS NOT NULL"
CONCEPT_COUNTS_SQL = "SELECT concept, count(*) AS n FROM exact GROUP BY concept"


def dedup_counts_sql(cfg: SelectConfig) -> str:
    """Per concept: rows left after near dedup, rows also above min_engagement, rows after exact dedup."""
    return (
        "SELECT concept, count(CASE WHEN near_rn = 1 THEN 1 END) AS after_dedup,"
        f" count(CASE WHEN {kept_condition(cfg)} THEN 1 END) AS available, count(*) AS uniq"
        " FROM near GROUP BY concept"
    )
