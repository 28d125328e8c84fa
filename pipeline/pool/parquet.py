"""Parquet pools: one row per sample, the image as bytes (a bytes column, or a Hugging Face Image
struct {"bytes", "path"}) or as a path to an image file (relative paths from the parquet's folder).

source: "FILE.parquet::row=N" for inline bytes (read back from that row's row group), or the
image file's path for referenced images (read back by folder.read_source).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from photogenic.pipeline.core.storage import arrow_args, as_path
from photogenic.pipeline.pool.base import PoolError, ShardSpec, SourceError, file_shards, make_row, read_file

KIND = "parquet"
CAPTION_COLUMNS = ("caption", "text", "TEXT", "prompt")
IMAGE_BYTES_COLUMNS = ("image", "jpg", "png", "webp", "image_bytes", "bytes")
IMAGE_PATH_COLUMNS = ("path", "image_path", "file_name", "filepath")
ROW_MARK = "::row="


def discover(pool: Path, folder_shard_size: int) -> list[ShardSpec]:
    return file_shards(pool, KIND, ".parquet", skip=(".", "_"))


def read_rows(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    return _read_parquet(spec, max_bytes)


def owns_source(source: str) -> bool:
    return ROW_MARK in source and source.rsplit("::", 1)[0].endswith(".parquet")


def read_source(source: str) -> bytes:
    path, _, index = source.rpartition(ROW_MARK)
    return _parquet_row(path, int(index))


def _parquet_row(path: str, index: int) -> bytes:
    pf = _open_parquet(path)  # range reads: only that row group's column
    col = next((c for c in IMAGE_BYTES_COLUMNS if c in pf.schema_arrow.names), None)
    if col is None:
        raise SourceError(f"{path} has no image bytes column")
    start = 0
    for rg in range(pf.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if index < start + n:
            value = pf.read_row_group(rg, columns=[col]).column(0)[index - start].as_py()
            return value["bytes"] if isinstance(value, dict) else value
        start += n
    raise SourceError(f"row {index} past the end of {path}")


def _open_parquet(path: str) -> pq.ParquetFile:
    source, fs = arrow_args(path)
    return pq.ParquetFile(source, filesystem=fs)


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def _read_parquet(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    path = as_path(spec.path)
    try:
        pf = _open_parquet(spec.path)
    except Exception as err:
        raise PoolError(f"cannot read parquet pool file {path}: {err}") from err
    names = pf.schema_arrow.names
    caption_col = _pick(names, CAPTION_COLUMNS)
    bytes_col = _pick(names, IMAGE_BYTES_COLUMNS)
    path_col = _pick(names, IMAGE_PATH_COLUMNS)
    if bytes_col is None and path_col is None:
        raise PoolError(f"{path}: no image column (bytes: {IMAGE_BYTES_COLUMNS}, path: {IMAGE_PATH_COLUMNS})")
    index = 0
    for batch in pf.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            key = str(row["key"]) if row.get("key") is not None else f"{path.stem}-{index:09d}"
            caption = row.get(caption_col) if caption_col else None
            meta = {k: v for k, v in row.items() if k not in (caption_col, bytes_col, path_col)}
            image, source, error = None, f"{spec.path}::row={index}", None
            if bytes_col is not None:
                value = row.get(bytes_col)
                if isinstance(value, dict):  # Hugging Face Image feature: {"bytes", "path"}
                    value = value.get("bytes")
                image = value if isinstance(value, bytes) and value else None
                error = None if image else "image bytes empty or missing"
            if image is None and path_col is not None and row.get(path_col):
                ref = str(row[path_col])
                image_path = as_path(ref) if "://" in ref or ref.startswith("/") else path.parent / ref
                source = str(image_path)
                image, error = read_file(image_path, max_bytes)
            if image is not None and len(image) > max_bytes:
                image, error = None, f"too_large: {len(image)} bytes"
            yield make_row(key, spec, source, image, caption, meta, error)
            index += 1
