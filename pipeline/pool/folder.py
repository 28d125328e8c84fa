"""Image folders: every image file under the folder, with optional NAME.txt (caption) and
NAME.json (metadata) beside it; cut into shards of `folder_shard_size` images.

source: the image file's path; read back as the file's bytes.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from photogenic.pipeline.core.storage import as_path, location
from photogenic.pipeline.pool.base import IMAGE_EXTS, ShardSpec, SourceError, decode_text, make_row, read_file

KIND = "folder"


def discover(pool: Path, folder_shard_size: int) -> list[ShardSpec]:
    if not pool.is_dir():
        return []
    images = sorted(
        p.relative_to(pool).as_posix() for p in pool.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
    )
    root = location(pool)
    return [
        ShardSpec(f"folder-{i // folder_shard_size:05d}", KIND, root, tuple(images[i : i + folder_shard_size]))
        for i in range(0, len(images), folder_shard_size)
    ]


def read_rows(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    return _read_folder(spec, max_bytes)


def owns_source(source: str) -> bool:
    return "::" not in source


def read_source(source: str) -> bytes:
    try:
        return as_path(source).read_bytes()
    except OSError as err:
        raise SourceError(f"cannot read {source}: {err}") from None


def _read_folder(spec: ShardSpec, max_bytes: int) -> Iterator[dict[str, Any]]:
    root = as_path(spec.path)
    for rel in spec.members:
        image_path = root / rel
        key = str(Path(rel).with_suffix(""))
        caption = None
        txt = image_path.with_suffix(".txt")
        if txt.exists():
            raw = txt.read_bytes()
            caption = decode_text(raw) or raw.decode("utf-8", "replace")
        meta: dict[str, Any] = {}
        side = image_path.with_suffix(".json")
        if side.exists():
            try:
                js = json.loads(side.read_text())
                meta = js if isinstance(js, dict) else {}
            except (ValueError, UnicodeDecodeError):
                meta = {"json_error": "unparseable sidecar json"}
        image, error = read_file(image_path, max_bytes)
        yield make_row(key, spec, str(image_path), image, caption, meta, error)
