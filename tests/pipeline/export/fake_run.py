"""A tiny fake run directory for export and training tests: real photos, real files, real parquet.

Twelve of scikit-image's bundled photographs, small, some cropped to wide or tall aspects (so
training buckets differ), saved as JPEG or PNG; a candidates table with SCORE_SCHEMA columns whose
`source` is the file path; pass1 and pass2 decisions. One kept key has its file deleted (the export
must skip it with a reason), one kept key is only in the scores table (not in candidates).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from photogenic.pipeline.core.schema import SCORE_SCHEMA

# name, aspect crop (w/h), format, caption
PHOTOS = [
    ("astronaut", 1.0, "JPEG", "an astronaut in a white spacesuit holding a helmet"),
    ("chelsea", 1.5, "JPEG", "a tabby cat looking to the side"),
    ("coffee", 1.5, "JPEG", "a cup of coffee on a saucer"),
    ("rocket", 0.5, "JPEG", "a rocket on the launch pad"),
    ("immunohistochemistry", 1.0, "PNG", "stained tissue under a microscope"),
    ("hubble_deep_field", 2.0, "JPEG", "galaxies in the deep field"),
    ("colorwheel", 1.0, "PNG", "a colour wheel"),
    ("retina", 0.75, "JPEG", "the retina of an eye"),
    ("camera", 1.0, "JPEG", "a man with a camera on a tripod"),
    ("coins", 1.33, "JPEG", "old coins on a table"),
    ("moon", 1.0, "JPEG", "the surface of the moon"),
    ("grass", 0.6, "JPEG", "a patch of green grass"),
]
DROPPED_IN_PASS2 = {"moon", "grass"}
MISSING_FILE = "coins"  # kept, but its file disappears: a recorded skip, not a crash
SCORES_ONLY = "astronaut"  # kept, but only in scores/ (not in candidates)


def _photo(name: str, aspect: float, long_side: int) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    im = Image.fromarray(arr).convert("RGB")
    w, h = im.size
    if w / h > aspect:  # too wide: crop width
        nw = int(h * aspect)
        im = im.crop(((w - nw) // 2, 0, (w - nw) // 2 + nw, h))
    else:
        nh = int(w / aspect)
        im = im.crop((0, (h - nh) // 2, w, (h - nh) // 2 + nh))
    scale = long_side / max(im.size)
    return im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))))


def _score_row(key: str, path: Path, fmt: str, caption: str, size: tuple[int, int]) -> dict:
    data = path.read_bytes()
    row = {name: None for name in SCORE_SCHEMA.names}
    row.update(
        key=key, caption=caption, passed=True, reject_reason="", reject_detail="",
        width=size[0], height=size[1], aspect=size[0] / size[1], format=fmt, bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), phash=-123456789, sharpness=120.5,
        brightness=110.0, contrast=50.0, nsfw_score=0.01, offensive_term="", ocr_words=0,
        ocr_text="", clip_score=0.31, aesthetic_score=5.5, concept="photo", concept_score=0.9,
        likes=10, views=100, source=str(path), shard="pool", meta=json.dumps({"orig": key}),
    )
    return row


POOL_EXTS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def make_fake_run(root: str | Path, long_side: int = 96,
                  formats: dict[str, tuple[str, str]] | None = None) -> Path:
    """Write `root/pool/*.jpg|png` and `root/run/{scores,candidates,review}`; returns the run.
    `formats`: photo name -> (format, Pillow mode) for pools mixing more formats (WEBP, RGBA)."""
    root = Path(root)
    pool, run = root / "pool", root / "run"
    pool.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, aspect, fmt, caption in PHOTOS:
        im = _photo(name, aspect, long_side)
        fmt, mode = (formats or {}).get(name, (fmt, "RGB"))
        if mode == "RGBA":  # a transparent left half
            alpha = Image.new("L", im.size, 255)
            alpha.paste(0, (0, 0, im.width // 2, im.height))
            im = im.convert("RGBA")
            im.putalpha(alpha)
        elif mode != "RGB":
            im = im.convert(mode)
        path = pool / f"{name}.{POOL_EXTS[fmt]}"
        im.save(path, fmt, quality=90) if fmt in ("JPEG", "WEBP") else im.save(path, fmt)
        rows.append(_score_row(f"img-{name}", path, fmt, caption, im.size))
    scores = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    (run / "scores").mkdir(parents=True)
    pq.write_table(scores, run / "scores" / "part-pool.parquet")
    (run / "scores" / "_funnel.json").write_text(json.dumps(
        {"rows_in": len(rows), "passed": len(rows), "meaningless": ["clip"],
         "config": {"filters": {"clip": {"model": "tiny-random"}}}}))
    (run / "scores" / "_SUCCESS").write_text("{}")
    cand = pa.Table.from_pylist(
        [{**r, "engagement": 0.5, "concept_rank": i, "dup_group": r["key"]}
         for i, r in enumerate(rows) if r["key"] != f"img-{SCORES_ONLY}"])
    (run / "candidates").mkdir()
    pq.write_table(cand, run / "candidates" / "part-0.parquet")
    (run / "candidates" / "_SUCCESS").write_text("{}")
    keys = [r["key"] for r in rows]
    _decisions(run / "review" / "pass1", keys, set())
    _decisions(run / "review" / "pass2", keys, {f"img-{n}" for n in DROPPED_IN_PASS2})
    next(pool.glob(f"{MISSING_FILE}.*")).unlink()
    return run


def _decisions(directory: Path, keys: list[str], dropped: set[str]) -> None:
    directory.mkdir(parents=True)
    table = pa.table({
        "key": keys,
        "keep": [k not in dropped for k in keys],
        "votes": [3] * len(keys),
        "mean_rating": [4.0 if k not in dropped else 2.0 for k in keys],
    })
    pq.write_table(table, directory / "decisions.parquet")
    (directory / "_SUCCESS").write_text("{}")


def curated_keys() -> set[str]:
    """Keys an export from pass2 must contain (kept, readable)."""
    return {f"img-{n}" for n, *_ in PHOTOS} - {f"img-{n}" for n in DROPPED_IN_PASS2} - {
        f"img-{MISSING_FILE}"}
