"""What every pool format shares: the shard spec, the errors, and the POOL_SCHEMA row builder.

A format module (tar.py, parquet.py, folder.py; listed in formats.py) provides

    KIND                                  the ShardSpec.kind it reads
    discover(pool, folder_shard_size)     its shards at `pool` (a file or a folder), [] if none
    read_rows(spec, max_bytes)            the shard's samples as POOL_SCHEMA row dicts
    owns_source(source) / read_source     the bytes of one sample back from its `source` string

so both halves of a format, reading rows and reading one sample again, live together.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from photogenic.pipeline.core.schema import POOL_SCHEMA
from photogenic.pipeline.core.storage import location

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
KNOWN = {"key", "caption", "width", "height", "likes", "views"}


class PoolError(ValueError):
    """The pool path is not a pool we can read; the message says why."""


class SourceError(LookupError):
    """A sample's `source` cannot be read back."""


@dataclass(frozen=True)
class ShardSpec:
    id: str  # stable and filesystem-safe; names the shard's output file
    kind: str  # a format's KIND: "tar" | "parquet" | "folder"
    path: str  # tar or parquet file, or the folder root: an absolute local path or a URL
    members: tuple[str, ...] = field(default=())  # folder shards: relative image paths

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "ShardSpec":
        d = json.loads(text)
        d["members"] = tuple(d.get("members") or ())
        return ShardSpec(**d)


def shard_id(root: Path, path: Path) -> str:
    rel = path.relative_to(root).as_posix() if path != root else path.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", rel.replace("/", "__"))


def file_shards(pool: Path, kind: str, suffix: str, skip: tuple[str, ...] = ()) -> list[ShardSpec]:
    """One shard per `suffix` file: `pool` itself, or every such file under it whose name does
    not start with one of `skip`, in a stable order."""
    if pool.is_file():
        return [ShardSpec(shard_id(pool.parent, pool), kind, location(pool))] if pool.suffix == suffix else []
    files = sorted((p for p in pool.rglob(f"*{suffix}") if not (skip and p.name.startswith(skip))), key=str)
    return [ShardSpec(shard_id(pool, p), kind, location(p)) for p in files]


def to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    cols = {name: [r.get(name) for r in rows] for name in POOL_SCHEMA.names}
    return pa.RecordBatch.from_pydict(cols, schema=POOL_SCHEMA)


def as_int(value: Any) -> int | None:
    try:
        if value is None or isinstance(value, bool):
            return None
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def decode_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_file(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, why) for a file too large or unreadable."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"too_large: {size} bytes"
        return path.read_bytes(), None
    except OSError as err:
        return None, f"cannot read file: {err.strerror or err}"


def make_row(key: str, shard: ShardSpec, source: str, image: bytes | None, caption: Any, meta: dict[str, Any],
             read_error: str | None = None) -> dict[str, Any]:
    """One POOL_SCHEMA row; metadata beyond the known columns goes to `meta` as JSON."""
    extra = {k: v for k, v in meta.items() if k not in KNOWN}
    return {
        "key": key,
        "caption": caption if isinstance(caption, str) or caption is None else str(caption),
        "image": image,
        "source": source,
        "shard": shard.id,
        "width": as_int(meta.get("width")),
        "height": as_int(meta.get("height")),
        "likes": as_int(meta.get("likes")),
        "views": as_int(meta.get("views")),
        "meta": json.dumps(extra, default=str, ensure_ascii=False) if extra else None,
        "read_error": read_error,
    }
