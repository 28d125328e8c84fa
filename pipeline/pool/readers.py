"""Pool readers: the dispatch over the pool formats (formats.py; one module per format).

Each pool is split into shards (a tar, a parquet file, or a chunk of a folder). A shard is the
unit of work and of resume: `read_shard` streams it as Arrow batches of POOL_SCHEMA rows with
the image bytes inline, so a worker holds one batch of images at a time.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from photogenic.pipeline.core.storage import as_path
from photogenic.pipeline.pool.base import IMAGE_EXTS, PoolError, ShardSpec, to_batch
from photogenic.pipeline.pool.formats import BY_KIND, FORMATS
from photogenic.pipeline.pool.parquet import CAPTION_COLUMNS, IMAGE_BYTES_COLUMNS, IMAGE_PATH_COLUMNS

__all__ = [
    "CAPTION_COLUMNS", "IMAGE_BYTES_COLUMNS", "IMAGE_EXTS", "IMAGE_PATH_COLUMNS", "PoolError", "ShardSpec",
    "discover_shards", "read_shard",
]


def discover_shards(pool: str | Path, folder_shard_size: int = 1000) -> list[ShardSpec]:
    """List a pool's shards in a stable order (resume relies on it): those of the first format
    that finds any."""
    pool = as_path(pool)
    if not pool.exists():
        raise PoolError(f"pool not found: {pool}")
    for fmt in FORMATS:
        shards = fmt.discover(pool, folder_shard_size)
        if shards:
            return shards
    if pool.is_file():
        raise PoolError(f"unsupported pool file {pool}: expected a .tar, a .parquet or a folder")
    raise PoolError(f"no .tar shards, .parquet files or images found under {pool}")


def read_shard(spec: ShardSpec, batch_rows: int = 64, max_bytes: int = 50_000_000) -> Iterator[pa.RecordBatch]:
    rows: list[dict[str, Any]] = []
    for row in BY_KIND[spec.kind].read_rows(spec, max_bytes):
        rows.append(row)
        if len(rows) >= batch_rows:
            yield to_batch(rows)
            rows = []
    if rows:
        yield to_batch(rows)
