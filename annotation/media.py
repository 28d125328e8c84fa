"""Review images: materialised once per run as small JPEGs, served by Label Studio's local-files
storage through a link from its document root (never base64, never its upload folder)."""
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
from photogenic.pipeline.pool.sources import SourceError, read_source

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def media_name(key: str) -> str:
    """A file name for a key; keys with unsafe characters get a stable hash instead."""
    if _SAFE.match(key) and not key.startswith("."):
        return f"{key}.jpg"
    return f"k-{hashlib.sha1(key.encode()).hexdigest()[:20]}.jpg"


def materialise(key: str, source: str, media_dir: Path, max_side: int) -> str | None:
    """Write media_dir/NAME.jpg once (atomically); returns the name, or None if unreadable."""
    name = media_name(key)
    path = media_dir / name
    if path.exists():
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
    media_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        names = pool.map(lambda r: materialise(r[0], r[1], media_dir, max_side), rows)
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
