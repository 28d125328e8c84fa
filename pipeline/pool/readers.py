"""Pool readers: img2dataset webdataset shards, parquet, and image folders.

Each pool is split into shards (a tar, a parquet file, or a chunk of a folder). A shard is the
unit of work and of resume: `read_shard` streams it as Arrow batches of POOL_SCHEMA rows with
the image bytes inline, so a worker holds one batch of images at a time.
"""
from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.pipeline.core.schema import POOL_SCHEMA

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_COLUMNS = ("caption", "text", "TEXT", "prompt")
IMAGE_BYTES_COLUMNS = ("image", "jpg", "png", "webp", "image_bytes", "bytes")
IMAGE_PATH_COLUMNS = ("path", "image_path", "file_name", "filepath")
KNOWN = {"key", "caption", "width", "height", "likes", "views"}


class PoolError(ValueError):
    """The pool path is not a pool we can read; the message says why."""


@dataclass(frozen=True)
class ShardSpec:
    id: str  # stable and filesystem-safe; names the shard's output file
    kind: str  # "tar" | "parquet" | "folder"
    path: str  # tar or parquet file, or the folder root
    members: tuple[str, ...] = field(default=())  # folder shards: relative image paths

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "ShardSpec":
        d = json.loads(text)
        d["members"] = tuple(d.get("members") or ())
        return ShardSpec(**d)


def _shard_id(root: Path, path: Path) -> str:
    rel = str(path.relative_to(root)) if path != root else path.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", rel.replace("/", "__"))


def discover_shards(pool: str | Path, folder_shard_size: int = 1000) -> list[ShardSpec]:
    """List a pool's shards in a stable order (resume relies on it)."""
    pool = Path(pool)
    if not pool.exists():
        raise PoolError(f"pool not found: {pool}")
    if pool.is_file():
        if pool.suffix == ".tar":
            return [ShardSpec(_shard_id(pool.parent, pool), "tar", str(pool.resolve()))]
        if pool.suffix == ".parquet":
            return [ShardSpec(_shard_id(pool.parent, pool), "parquet", str(pool.resolve()))]
        raise PoolError(f"unsupported pool file {pool}: expected a .tar, a .parquet or a folder")
    tars = sorted(pool.rglob("*.tar"))
    if tars:
        return [ShardSpec(_shard_id(pool, t), "tar", str(t.resolve())) for t in tars]
    images = sorted(
        str(p.relative_to(pool)) for p in pool.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
    )
    parquets = sorted(p for p in pool.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if parquets:  # images beside parquet files are referenced by path from them
        return [ShardSpec(_shard_id(pool, p), "parquet", str(p.resolve())) for p in parquets]
    if images:
        root = str(pool.resolve())
        return [
            ShardSpec(f"folder-{i // folder_shard_size:05d}", "folder", root, tuple(images[i : i + folder_shard_size]))
            for i in range(0, len(images), folder_shard_size)
        ]
    raise PoolError(f"no .tar shards, .parquet files or images found under {pool}")


def read_shard(spec: ShardSpec, batch_rows: int = 64, max_bytes: int = 50_000_000) -> Iterator[pa.RecordBatch]:
    readers = {"tar": _read_tar, "parquet": _read_parquet, "folder": _read_folder}
    rows: list[dict[str, Any]] = []
    for row in readers[spec.kind](spec, max_bytes):
        rows.append(row)
        if len(rows) >= batch_rows:
            yield _to_batch(rows)
            rows = []
    if rows:
        yield _to_batch(rows)


def _to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    cols = {name: [r.get(name) for r in rows] for name in POOL_SCHEMA.names}
    return pa.RecordBatch.from_pydict(cols, schema=POOL_SCHEMA)


def _as_int(value: Any) -> int | None:
    try:
        if value is None or isinstance(value, bool):
            return None
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _decode_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _row(key: str, shard: ShardSpec, source: str, image: bytes | None, caption: Any, meta: dict[str, Any],
         read_error: str | None = None) -> dict[str, Any]:
    extra = {k: v for k, v in meta.items() if k not in KNOWN}
    return {
        "key": key,
        "caption": caption if isinstance(caption, str) or caption is None else str(caption),
        "image": image,
        "source": source,
        "shard": shard.id,
        "width": _as_int(meta.get("width")),
        "height": _as_int(meta.get("height")),
        "likes": _as_int(meta.get("likes")),
        "views": _as_int(meta.get("views")),
        "meta": json.dumps(extra, default=str, ensure_ascii=False) if extra else None,
        "read_error": read_error,
    }


# --- webdataset (img2dataset output) -------------------------------------------------------


def _sidecar_parquet(tar_path: Path) -> dict[str, dict[str, Any]]:
    side = tar_path.with_suffix(".parquet")
    if not side.exists():
        return {}
    try:
        table = pq.read_table(side)
    except Exception:  # a broken sidecar must not sink the shard; the tar still has the samples
        return {}
    out: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        if row.get("key") is None:
            continue
        status = row.get("status")
        if status not in (None, "success"):
            continue  # img2dataset lists failed downloads too; they were never in the pool
        out[str(row["key"])] = row
    return out


def _sample_key(member: str) -> tuple[str, str]:
    base = member.rsplit("/", 1)[-1]
    stem, _, ext = base.partition(".")
    prefix = member[: len(member) - len(base)]
    return prefix + stem, "." + ext.lower() if ext else ""


def _read_tar(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    tar_path = Path(spec.path)
    sidecar = _sidecar_parquet(tar_path)
    seen: set[str] = set()
    group_key: str | None = None
    group: dict[str, Any] = {}
    broken: str | None = None

    def flush() -> dict[str, Any] | None:
        if group_key is None or group_key in seen:
            return None
        seen.add(group_key)
        return _tar_sample(spec, tar_path, group_key, group, sidecar.get(group_key, {}))

    try:
        with tarfile.open(tar_path, "r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                key, ext = _sample_key(member.name)
                if key != group_key:
                    row = flush()
                    if row:
                        yield row
                    group_key, group = key, {}
                if ext in IMAGE_EXTS:
                    group["image_member"] = member.name
                    if member.size > max_bytes:
                        group["error"] = f"too_large: {member.size} bytes"
                    else:
                        group["image"] = tf.extractfile(member).read()
                elif ext in (".txt", ".json") and member.size <= 10_000_000:
                    group[ext] = tf.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        broken = f"shard truncated or corrupt: {err}"
        if "image" not in group:
            group["error"] = broken
    row = flush()
    if row:
        yield row
    # Samples the sidecar lists but the tar lost (truncated shard) are still rows.
    for key, meta in sidecar.items():
        if key not in seen:
            seen.add(key)
            reason = broken or "image missing from shard"
            yield _row(key, spec, f"{tar_path}::{key}", None, meta.get("caption"), meta, reason)


def _tar_sample(spec: ShardSpec, tar_path: Path, key: str, group: dict[str, Any], side: dict[str, Any]) -> dict[str, Any]:
    meta = dict(side)
    if ".json" in group:
        try:
            js = json.loads(group[".json"])
            if isinstance(js, dict):
                meta = {**js, **side}
        except (ValueError, UnicodeDecodeError):
            meta.setdefault("json_error", "unparseable sample json")
    caption = side.get("caption")
    if ".txt" in group:
        text = _decode_text(group[".txt"])
        caption = text if text is not None else group[".txt"].decode("utf-8", "replace")
    member = group.get("image_member", f"{key}.jpg")
    error = group.get("error") or (None if "image_member" in group else "no image in sample")
    return _row(key, spec, f"{tar_path}::{member}", group.get("image"), caption, meta, error)


# --- parquet -------------------------------------------------------------------------------


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def _read_parquet(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    path = Path(spec.path)
    try:
        pf = pq.ParquetFile(path)
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
            image, source, error = None, f"{path}::row={index}", None
            if bytes_col is not None:
                value = row.get(bytes_col)
                if isinstance(value, dict):  # Hugging Face Image feature: {"bytes", "path"}
                    value = value.get("bytes")
                image = value if isinstance(value, bytes) and value else None
                error = None if image else "image bytes empty or missing"
            if image is None and path_col is not None and row.get(path_col):
                image_path = Path(row[path_col])
                if not image_path.is_absolute():
                    image_path = path.parent / image_path
                source = str(image_path)
                image, error = _read_file(image_path, max_bytes)
            if image is not None and len(image) > max_bytes:
                image, error = None, f"too_large: {len(image)} bytes"
            yield _row(key, spec, source, image, caption, meta, error)
            index += 1


# --- image folder with .txt sidecars -------------------------------------------------------


def _read_file(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"too_large: {size} bytes"
        return path.read_bytes(), None
    except OSError as err:
        return None, f"cannot read file: {err.strerror or err}"


def _read_folder(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    root = Path(spec.path)
    for rel in spec.members:
        image_path = root / rel
        key = str(Path(rel).with_suffix(""))
        caption = None
        txt = image_path.with_suffix(".txt")
        if txt.exists():
            raw = txt.read_bytes()
            caption = _decode_text(raw) or raw.decode("utf-8", "replace")
        meta: dict[str, Any] = {}
        side = image_path.with_suffix(".json")
        if side.exists():
            try:
                js = json.loads(side.read_text())
                meta = js if isinstance(js, dict) else {}
            except (ValueError, UnicodeDecodeError):
                meta = {"json_error": "unparseable sidecar json"}
        image, error = _read_file(image_path, max_bytes)
        yield _row(key, spec, str(image_path), image, caption, meta, error)
