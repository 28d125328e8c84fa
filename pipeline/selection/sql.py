"""The SQL of `photogenic select`, one text for DuckDB and Spark: each builder takes the engine's
`Dialect` for the few spellings that differ. The plan (plan.py) runs these in order; the table
names they read (scores, dup_hashes, base, exact, uniq, phash_values, near, kept, thresholds,
ranked, limits, ...) are the plan's.

Cost model: every pass over all rows is a scan of `base` (the passed rows, narrow, built once)
or of `scores` (the parquet); the tables that hold one row per duplicate (exact, near), per
near pair (edges) or per candidate (ranked) are small, and only they carry window functions.
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


def stats_sql(d: Dialect) -> str:
    # Keys must be unique among passed rows: counted as distinct 64-bit hashes (one integer
    # hash table, not one of strings); fewer hashes than keys is checked exactly (keys_sql).
    return f"""
        SELECT count(*) AS total_rows,
               count(CASE WHEN passed THEN 1 END) AS passed_rows,
               count(DISTINCT CASE WHEN passed AND key IS NOT NULL THEN {d.hash64('key')} END) AS passed_key_hashes,
               count(CASE WHEN passed AND key IS NULL THEN 1 END) AS null_keys,
               count(CASE WHEN passed AND views > 0 AND likes IS NOT NULL THEN 1 END) AS rows_with_views,
               sum(CASE WHEN passed AND views > 0 AND likes IS NOT NULL
                        THEN least(greatest(likes, 0), views) END) AS sum_likes,
               sum(CASE WHEN passed AND views > 0 AND likes IS NOT NULL THEN views END) AS sum_views
        FROM scores"""


KEYS_SQL = "SELECT count(DISTINCT key) AS passed_keys FROM scores WHERE passed AND key IS NOT NULL"


def dup_hashes_sql(d: Dialect) -> str:
    # 64-bit hashes of the sha256 values that occur more than once: every exact-duplicate group
    # (and, rarely, a hash collision, which exact_sql sorts out by the sha256 itself).
    return f"""
        SELECT {d.hash64('sha256')} AS h FROM scores
        WHERE passed AND key IS NOT NULL AND sha256 IS NOT NULL
        GROUP BY {d.hash64('sha256')} HAVING count(*) > 1"""


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


def base_sql(d: Dialect, engagement: str, blend: HeadBlend | None = None) -> str:
    # The passed rows with only what selection needs (the full score rows are joined back for
    # the few selected keys at the end, final_sql). sha256 is kept only for rows whose sha256
    # hash repeats (dup_sha), the candidates of exact dedup; null elsewhere.
    # rank_score orders duplicates' keepers and the rows of a concept: engagement, or its blend
    # with a learnt head (HeadBlend). Without a head, base_view adds it as engagement.
    concept = f"CASE WHEN s.concept IS NULL OR trim(s.concept) = '' THEN '{OTHER_CONCEPT}' ELSE s.concept END"
    head = ", h.head_score" if blend else ""
    join = " LEFT JOIN head_scores h ON h.key = s.key" if blend else ""
    inner = f"""
            SELECT s.key, s.phash, {concept} AS concept, {engagement} AS engagement{head},
                   CASE WHEN x.h IS NOT NULL THEN s.sha256 END AS dup_sha
            FROM scores s LEFT JOIN dup_hashes x ON {d.hash64('s.sha256')} = x.h{join}
            WHERE s.passed AND s.key IS NOT NULL"""
    if blend:
        return f"SELECT b.*, {blend.sql()} AS rank_score FROM ({inner}) b"
    return inner


def base_view_sql(blend: HeadBlend | None) -> str:
    if blend:
        return "SELECT * FROM base_rows"
    return "SELECT b.*, CAST(NULL AS DOUBLE) AS head_score, engagement AS rank_score FROM base_rows b"


ROW_COLUMNS = "key, phash, concept, engagement, head_score, rank_score"

# Exact dedup over the rows whose sha256 hash repeats: one row per sha256, the most engaging
# (ties: smallest key); exact_n rows in the group, exact_min its smallest key.
EXACT_WINDOW = "PARTITION BY dup_sha ORDER BY rank_score DESC, key"
EXACT_SQL = f"""
    SELECT {ROW_COLUMNS}, dup_sha,
           row_number() OVER ({EXACT_WINDOW}) AS exact_rn,
           first_value(key) OVER ({EXACT_WINDOW}) AS exact_keep,
           count(*) OVER (PARTITION BY dup_sha) AS exact_n,
           min(key) OVER (PARTITION BY dup_sha) AS exact_min
    FROM base WHERE dup_sha IS NOT NULL"""

# One row per sha256: the rows of unique sha256 (or none) as they are, and the exact keepers.
UNIQ_SQL = f"""
    SELECT {ROW_COLUMNS}, CAST(1 AS BIGINT) AS exact_n, key AS exact_min FROM base WHERE dup_sha IS NULL
    UNION ALL
    SELECT {ROW_COLUMNS}, exact_n, exact_min FROM exact WHERE exact_rn = 1"""

# The distinct pHash values of uniq with their multiplicity (a value held by 2+ rows is a
# near-duplicate group even without an edge: distance 0).
PHASH_VALUES_SQL = "SELECT phash AS p, count(*) AS n FROM uniq WHERE phash IS NOT NULL GROUP BY phash"
REPEATED_PHASH_SQL = "SELECT p FROM phash_values WHERE n > 1"


def band_value_sql(d: Dialect, offset: int, mask: int, column: str = "p") -> str:
    return column if mask == -1 else f"({d.shift_right(column, offset)} & {mask})"


def band_table_sql(d: Dialect, offset: int, mask: int) -> str:
    """One band's values (p, v), ordered by v so that a range of v is a few row groups."""
    return f"SELECT p, {band_value_sql(d, offset, mask)} AS v FROM phash_values ORDER BY v"


@dataclass(frozen=True)
class BandPartition:
    """Partition `part` of 2^bits of a band `width` bits wide: the values whose top `bits` bits
    are `part`. A flip whose top bits are h moves a value of partition j ^ h into partition j."""

    width: int
    bits: int
    part: int

    def range_of(self, part: int) -> tuple[int, int]:
        shift = self.width - self.bits
        return part << shift, ((part + 1) << shift) - 1

    def flip_high(self, flip: int) -> int:
        return flip >> (self.width - self.bits)


def band_edges_sql(d: Dialect, band: int, offset: int, mask: int, hamming: int,
                   partition: BandPartition | None = None, flips: list[int] | None = None) -> str:
    """Verified pairs (p1 < p2) of pHash values whose band `band` differs by a flip of
    band_flips: each pair is probed from one side only, the one whose band value has a 0 at the
    flip's lowest set bit (the other side has a 1 there), so a pair costs one probe, not two;
    pairs equal in the band (flip 0) come from the self-join, kept once by p1 < p2.

    Whole band (partition None): both sides read phash_values. A partition: the band's values
    come from the table band_{band} (band_table_sql), the build side is the partition's values
    and the probes are those that land in it (from partition j ^ h for the flips whose top bits
    are h), so every join builds a small hash table; the partitions together find every pair."""
    verify = f"(a.flip <> 0 OR a.p < b.p) AND bit_count({d.xor('a.p', 'b.p')}) <= {int(hamming)}"
    if partition is None:
        v = band_value_sql(d, offset, mask)
        return f"""
        SELECT least(a.p, b.p) AS p1, greatest(a.p, b.p) AS p2
        FROM (SELECT bv.p, {d.xor('bv.v', 'f.flip')} AS v, f.flip
              FROM (SELECT p, {v} AS v FROM phash_values) bv
              JOIN band_flips f ON f.band = {int(band)} AND (bv.v & f.low) = 0) a
        JOIN (SELECT p, {v} AS v FROM phash_values) b ON a.v = b.v
        WHERE {verify}"""
    table = f"band_{int(band)}"
    shift = partition.width - partition.bits
    probes = []
    for high in sorted({partition.flip_high(f) for f in flips or [0]}):
        lo, hi = partition.range_of(partition.part ^ high)
        probes.append(
            f"SELECT bv.p, {d.xor('bv.v', 'f.flip')} AS v, f.flip FROM {table} bv"
            f" JOIN band_flips f ON f.band = {int(band)} AND f.flip >= {high << shift} AND f.flip < {(high + 1) << shift}"
            f" AND (bv.v & f.low) = 0 WHERE bv.v BETWEEN {lo} AND {hi}"
        )
    lo, hi = partition.range_of(partition.part)
    return f"""
        SELECT least(a.p, b.p) AS p1, greatest(a.p, b.p) AS p2
        FROM ({" UNION ALL ".join(probes)}) a
        JOIN (SELECT p, v FROM {table} WHERE v BETWEEN {lo} AND {hi}) b ON a.v = b.v
        WHERE {verify}"""


# Near dedup over the rows whose pHash is in a near-duplicate component (near_map: phash ->
# root, the component's smallest value): one row per component, the most engaging; its
# duplicate group counts the exact duplicates of its members too.
NEAR_WINDOW = "PARTITION BY root ORDER BY rank_score DESC, key"
NEAR_SQL = f"""
    SELECT u.*, m.root,
           row_number() OVER ({NEAR_WINDOW}) AS near_rn,
           first_value(u.key) OVER ({NEAR_WINDOW}) AS near_keep,
           sum(u.exact_n) OVER (PARTITION BY root) AS dup_size,
           min(u.exact_min) OVER (PARTITION BY root) AS dup_group
    FROM uniq u JOIN near_map m ON u.phash = m.phash"""

# Rows left after both dedups, before the minimum engagement: rows outside every component as
# they are (their group is their exact group), and the components' keepers.
DEDUPED_SQL = f"""
    SELECT u.key, u.phash, u.concept, u.engagement, u.head_score, u.rank_score,
           u.exact_n AS dup_size, u.exact_min AS dup_group
    FROM uniq u LEFT JOIN near_map m ON u.phash = m.phash WHERE m.phash IS NULL
    UNION ALL
    SELECT {ROW_COLUMNS}, dup_size, dup_group FROM near WHERE near_rn = 1"""


def min_engagement_condition(cfg: SelectConfig) -> str:
    return f"engagement >= {sql_double(cfg.min_engagement)}"


def kept_sql(cfg: SelectConfig) -> str:
    if cfg.min_engagement is None:
        return "SELECT * FROM deduped"
    return f"SELECT * FROM deduped WHERE {min_engagement_condition(cfg)}"


def concept_counts_sql(cfg: SelectConfig) -> str:
    """Per concept (columns concept, what, n): passed rows, exact and near duplicates removed,
    rows below the minimum engagement after dedup."""
    parts = [
        "SELECT concept, 'passed' AS what, count(*) AS n FROM base GROUP BY concept",
        "SELECT concept, 'exact' AS what, count(*) AS n FROM exact WHERE exact_rn > 1 GROUP BY concept",
        "SELECT concept, 'near' AS what, count(*) AS n FROM near WHERE near_rn > 1 GROUP BY concept",
    ]
    if cfg.min_engagement is not None:
        parts.append(
            "SELECT concept, 'below' AS what, count(*) AS n FROM deduped"
            f" WHERE NOT ({min_engagement_condition(cfg)}) GROUP BY concept"
        )
    return " UNION ALL ".join(parts)


def thresholds_sql(d: Dialect, max_quota: int) -> str:
    """Per concept with a quota: (concept, quota, threshold), the threshold being the quota-th
    largest rank_score of its kept rows (a top-k per concept, no sort of all rows)."""
    return d.quota_thresholds("kept", "limits", max(int(max_quota), 1))


def ranked_sql(d: Dialect, cfg: SelectConfig, seed: int) -> str:
    """The rows that can be in a concept's quota, ranked: rank_score at or above the concept's
    threshold (its quota-th largest rank_score), so every row ranked before one of them is one
    of them and row_number among them is the rank among all kept rows of the concept. The
    seeded tie-break hash is computed for these rows only. MetaCLIP: the sampled rows."""
    tie = d.hash60(f"concat('{int(seed)}:rank:', k.key)")
    if cfg.balance == "metaclip":
        h = d.hash60(f"concat('{int(seed)}:sample:', k.key)")
        source = f"SELECT k.*, {tie} AS tie FROM kept k JOIN limits l ON k.concept = l.concept WHERE {h} < l.threshold"
    else:
        source = (f"SELECT k.*, {tie} AS tie, t.quota FROM kept k JOIN thresholds t"
                  " ON k.concept = t.concept WHERE k.rank_score >= t.threshold")
    return f"""
        SELECT c.*, row_number() OVER (PARTITION BY c.concept ORDER BY c.rank_score DESC, c.tie, c.key)
               AS concept_rank
        FROM ({source}) c"""


SELECTION_COLUMNS = ("concept", "engagement", "concept_rank", "dup_group", "dup_size", "head_score", "rank_score")


def final_sql(cfg: SelectConfig) -> str:
    cols = [f"r.{c}" if c in SELECTION_COLUMNS else f"s.{c}" for c in CANDIDATE_SCHEMA.names]
    quota = "" if cfg.balance == "metaclip" else " WHERE concept_rank <= quota"
    return f"""
        SELECT {', '.join(cols)} FROM (SELECT * FROM ranked{quota}) r
        JOIN scores s ON s.key = r.key AND s.passed
        ORDER BY r.concept, r.concept_rank"""


def dropped_sql(cfg: SelectConfig) -> str:
    parts = [
        "SELECT key, concept, 'exact_duplicate' AS reason, exact_keep AS dup_of FROM exact WHERE exact_rn > 1",
        "SELECT key, concept, 'near_duplicate' AS reason, near_keep AS dup_of FROM near WHERE near_rn > 1",
    ]
    if cfg.min_engagement is not None:
        parts.append(
            "SELECT key, concept, 'below_min_engagement' AS reason, CAST(NULL AS STRING) AS dup_of FROM deduped"
            f" WHERE NOT ({min_engagement_condition(cfg)})"
        )
    if cfg.balance == "metaclip":
        parts.append(
            "SELECT k.key, k.concept, 'not_sampled' AS reason, CAST(NULL AS STRING) AS dup_of FROM kept k"
            " LEFT JOIN ranked r ON k.key = r.key WHERE r.key IS NULL"
        )
    else:
        # Below the threshold (or in a concept without quota), and at or above it but ranked
        # past the quota (ties at the threshold).
        parts.append(
            "SELECT k.key, k.concept, 'over_quota' AS reason, CAST(NULL AS STRING) AS dup_of FROM kept k"
            " LEFT JOIN thresholds t ON k.concept = t.concept WHERE t.threshold IS NULL OR k.rank_score < t.threshold"
        )
        parts.append(
            "SELECT key, concept, 'over_quota' AS reason, CAST(NULL AS STRING) AS dup_of FROM ranked"
            " WHERE concept_rank > quota"
        )
    return " UNION ALL ".join(parts)
