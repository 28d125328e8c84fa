"""Arrow schemas of the contracts between stages (DESIGN.md, "Contracts")."""
from __future__ import annotations

import pyarrow as pa

# Reject reasons, in the order bad input is detected; model filters follow in cascade order.
REJECT_REASONS = (
    "unreadable",
    "caption",
    "geometry",
    "technical",
    "offensive",
    "ocr",
    "clip",
    "aesthetic",
)

# What every reader yields: one row per pool sample, image bytes inline for the worker only.
POOL_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("image", pa.large_binary()),  # null when missing or refused before reading
        ("source", pa.string()),  # where the bytes live: "TAR::MEMBER", "PARQUET::row=N" or a path
        ("shard", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("likes", pa.int64()),
        ("views", pa.int64()),
        ("meta", pa.string()),  # any other metadata, passed through untouched as JSON
        ("read_error", pa.string()),  # why the reader could not deliver the image, if so
    ]
)

# One score row per pool row, never dropped. Columns of filters that did not run are null.
SCORE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("passed", pa.bool_()),
        ("reject_reason", pa.string()),  # "" when passed
        ("reject_detail", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("aspect", pa.float32()),
        ("format", pa.string()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("phash", pa.int64()),  # 64-bit perceptual hash, stored as signed int64
        ("edge_width", pa.float32()),
        ("edge_width_best", pa.float32()),
        ("edge_coverage", pa.float32()),
        ("noise", pa.float32()),
        ("jpeg_quality", pa.float32()),
        ("clipped_highlights", pa.float32()),
        ("clipped_shadows", pa.float32()),
        ("sharpness", pa.float32()),
        ("brightness", pa.float32()),
        ("contrast", pa.float32()),
        ("nsfw_score", pa.float32()),
        ("offensive_term", pa.string()),
        ("ocr_words", pa.int32()),
        ("ocr_text", pa.string()),
        ("clip_score", pa.float32()),
        ("aesthetic_score", pa.float32()),
        ("concept", pa.string()),
        ("concept_score", pa.float32()),
        ("likes", pa.int64()),
        ("views", pa.int64()),
        ("source", pa.string()),
        ("shard", pa.string()),
        ("meta", pa.string()),
    ]
)

SCORE_COLUMNS = tuple(SCORE_SCHEMA.names)
