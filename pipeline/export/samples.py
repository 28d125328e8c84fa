"""One exported sample: its names, split, caption and the JSON record every format stores."""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "validation")
FORMAT_EXTS = {"JPEG": "jpg", "JPG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif",
               "BMP": "bmp", "TIFF": "tiff", "MPO": "jpg"}


@dataclass(frozen=True)
class Sample:
    """What a format writer gets for one image: the pool bytes as they are, never re-encoded."""

    key: str
    data: bytes
    record: dict[str, Any]  # score row + decision + export info (the webdataset .json)
    text: str  # the caption
    split: str
    name: str  # file- and webdataset-safe form of the key (safe_name)
    ext: str  # image extension from the real format (image_extension)
    # What the tar formats store for this sample, per (tar_images, jpeg_quality): encoded once
    # (images.tar_image) although the stage and each tar writer ask for it.
    tar_images: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def file_name(self) -> str:
        return f"{self.name}.{self.ext}"

    def tar_json(self, image: dict[str, Any]) -> bytes:
        """The .json member of the tar formats: the record with `image` (what the tar stores)
        under `export`, and no null values. `datasets` types the json column from the first few
        samples; a field null there and set later fails the whole load, an absent one does not
        (the manifest keeps every column, nulls included)."""
        record = {**self.record, "export": {**self.record.get("export", {}), "image": image}}
        return json.dumps(drop_nulls(record), sort_keys=True, default=json_default).encode()


@dataclass
class Skip:
    """A kept key that was not exported."""

    key: str
    reason: str  # a short name: the stage summary's by_reason
    message: str  # what lineage.json says

    def to_lineage(self) -> dict[str, str]:
        return {"key": self.key, "reason": self.message}


@dataclass
class Written:
    """What one export wrote: lineage.json and the stage summary are made from this."""

    read: dict[str, int]  # rows read from the chosen stage, and how many of them were kept
    curated: int  # distinct kept keys, each one exported or skipped
    exported: int
    splits: dict[str, int]
    skipped: list[Skip] = field(default_factory=list)
    formats: dict[str, dict[str, int]] = field(default_factory=dict)  # format -> files, rows


def make_sample(key: str, data: bytes, score: dict[str, Any], decision: dict[str, Any],
                stage: str, split: str) -> Sample:
    return Sample(key=key, data=data, record=sample_record(key, score, decision, stage, split),
                  text=caption_for(score, decision), split=split, name=safe_name(key),
                  ext=image_extension(data, score.get("format")))


def drop_nulls(value: Any) -> Any:
    """`value` without None entries in its dicts, at any depth (list items are kept)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def sample_record(key: str, score: dict[str, Any], decision: dict[str, Any], stage: str,
                  split: str) -> dict[str, Any]:
    record = dict(score)
    record["key"] = key
    record["decision"] = {k: v for k, v in decision.items() if k != "key"}
    record["export"] = {"from": stage, "split": split}
    return record


def caption_for(score: dict[str, Any], decision: dict[str, Any]) -> str:
    # A reviewer's rewritten caption (Emu's captions were hand-written) wins over the pool's.
    for source in (decision, score):
        text = source.get("caption")
        if isinstance(text, str) and text.strip():
            return text.strip()
    return ""


def safe_name(key: str) -> str:
    """A file and webdataset-safe name for a key (webdataset splits a name at its first dot)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,100}", key):
        return key
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", key)[:80]
    return f"{stem}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def split_of(key: str, validation_fraction: float, salt: str = "") -> str:
    """Deterministic split from a hash of the key: a key never changes split between exports."""
    digest = hashlib.sha256(f"{salt}{key}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"


def assign_splits(keys: list[str], validation_fraction: float, salt: str = "") -> dict[str, str]:
    splits = {k: split_of(k, validation_fraction, salt) for k in keys}
    # Early stopping needs at least one held-out image; on tiny sets the hash may give none.
    if validation_fraction > 0 and len(keys) >= 2 and "validation" not in splits.values():
        lowest = min(keys, key=lambda k: hashlib.sha256(f"{salt}{k}".encode()).digest())
        splits[lowest] = "validation"
    return splits


def image_extension(data: bytes, declared_format: str | None) -> str:
    if declared_format and declared_format.upper() in FORMAT_EXTS:
        return FORMAT_EXTS[declared_format.upper()]
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return FORMAT_EXTS.get((im.format or "").upper(), (im.format or "bin").lower())
    except Exception:  # not an image we know: keep the bytes, name them honestly
        return "bin"
