"""Review images: materialised once per run as small JPEGs, served by Label Studio's local-files
storage through a link from its document root (never base64, never its upload folder); for a run
on S3 written under its media prefix on the bucket and served by an S3 import storage
(annotation/objectstore.py)."""
from __future__ import annotations

import hashlib
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageOps

from photogenic.pipeline.core.runio import write_bytes_atomic
from photogenic.pipeline.core.storage import filesystem, is_remote
from photogenic.pipeline.pool.sources import SourceError, read_source

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def media_name(key: str) -> str:
    """A file name for a key; keys with unsafe characters get a stable hash instead."""
    if _SAFE.match(key) and not key.startswith("."):
        return f"{key}.jpg"
    return f"k-{hashlib.sha1(key.encode()).hexdigest()[:20]}.jpg"


def materialise(key: str, source: str, media_dir: Path, max_side: int,
                existing: set[str] | None = None) -> str | None:
    """Write media_dir/NAME.jpg once (atomically); returns the name, or None if unreadable.
    `existing`: the names already there (one listing instead of a request per image)."""
    name = media_name(key)
    path = media_dir / name
    if (name in existing) if existing is not None else path.exists():
        return name
    try:
        data = read_source(source)
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            im.draft("RGB", (max_side, max_side))
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
    except (SourceError, OSError, ValueError, Image.DecompressionBombError):
        return None
    write_bytes_atomic(buf.getvalue(), path)
    return name


def materialise_all(rows: list[tuple[str, str]], media_dir: Path, max_side: int,
                    workers: int = 4) -> dict[str, str | None]:
    existing = None
    if is_remote(media_dir):  # a store: no folders to make; list what is there once
        fs, inner = filesystem(media_dir)
        existing = {p.rsplit("/", 1)[-1] for p in fs.find(inner)} if fs.exists(inner) else set()
    else:
        media_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        names = pool.map(lambda r: materialise(r[0], r[1], media_dir, max_side, existing), rows)
        return {key: name for (key, _), name in zip(rows, names)}


def link_into_root(media_dir: Path, root: Path, run_id: str) -> Path:
    """ROOT/RUN_ID -> media_dir, so one document root serves every run's media."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / run_id
    target = media_dir.resolve()
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return link
        link.unlink()
    elif link.exists():
        return link  # a real folder (shared mount layout): media are written there directly
    link.symlink_to(target, target_is_directory=True)
    return link


def image_url(run_id: str, name: str) -> str:
    return f"/data/local-files/?d={quote(f'{run_id}/{name}')}"
