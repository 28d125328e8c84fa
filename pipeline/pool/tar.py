"""img2dataset / webdataset tar shards: samples are runs of members sharing a stem (a.jpg,
a.txt, a.json), with an optional sidecar parquet (00000.parquet beside 00000.tar) carrying
img2dataset's metadata and the keys of samples a truncated tar lost.

source: "SHARD.tar::MEMBER" (SHARD a local path or a URL); read back by seeking to the member's
data (a range read on an object store). Shards are streamed, never downloaded whole.
"""
from __future__ import annotations

import functools
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from photogenic.pipeline.core.storage import arrow_args, as_path, open_input
from photogenic.pipeline.pool.base import IMAGE_EXTS, ShardSpec, SourceError, decode_text, file_shards, make_row

KIND = "tar"
SEPARATOR = "::"


def discover(pool: Path, folder_shard_size: int) -> list[ShardSpec]:
    return file_shards(pool, KIND, ".tar")


def read_rows(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    return _read_tar(spec, max_bytes)


def owns_source(source: str) -> bool:
    return SEPARATOR in source and source.rsplit(SEPARATOR, 1)[0].endswith(".tar")


def read_source(source: str) -> bytes:
    container, member = source.rsplit(SEPARATOR, 1)
    try:
        offset, size = _tar_index(container)[member]
    except (KeyError, OSError, tarfile.TarError) as err:
        raise SourceError(f"{member} not found in {container}: {err}") from None
    with open_input(container) as fh:
        fh.seek(offset)
        return fh.read(size)


@functools.lru_cache(maxsize=64)
def _tar_index(tar_path: str) -> dict[str, tuple[int, int]]:
    # Scanning headers skips data blocks; cached so reading many members of a shard is cheap.
    index = {}
    with open_input(tar_path) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
        for m in tf:
            if m.isfile():
                index[m.name] = (m.offset_data, m.size)
    return index


def _sidecar_parquet(tar_path: Path) -> dict[str, dict[str, Any]]:
    side = tar_path.with_suffix(".parquet")
    try:
        if not side.exists():
            return {}
        path, fs = arrow_args(side)
        table = pq.read_table(path, filesystem=fs)
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
    tar_path = as_path(spec.path)
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
        with open_input(spec.path, stream=True) as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
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
            yield make_row(key, spec, f"{spec.path}::{key}", None, meta.get("caption"), meta, reason)


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
        text = decode_text(group[".txt"])
        caption = text if text is not None else group[".txt"].decode("utf-8", "replace")
    member = group.get("image_member", f"{key}.jpg")
    error = group.get("error") or (None if "image_member" in group else "no image in sample")
    return make_row(key, spec, f"{spec.path}::{member}", group.get("image"), caption, meta, error)
