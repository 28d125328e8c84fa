"""img2dataset/{train,validation}/: the layout img2dataset writes with `--output_format webdataset`,
which NeMo Curator's and clip-retrieval's readers take, one folder per split:

    NNNNN.tar          KEY.jpg, KEY.txt, KEY.json per sample (KEY: img2dataset's numeric key)
    NNNNN.parquet      one row per sample of that tar: key, caption, url, width, height, ...
    NNNNN_stats.json   count, successes, status_dict, ... for that tar

KEY is img2dataset's: the shard number times 10**ceil(log10(shard_size)) plus the sample's
position in the shard, zero-padded (000000000, 000000001, ... with shard_size 10000). The
Photogenic key is the parquet column `photogenic_key` and, with the whole record, under
`photogenic` in KEY.json. Images as in the webdataset format (`[export] tar_images`, images.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.pipeline.core.config.training import ExportConfig
from photogenic.pipeline.export.images import tar_image
from photogenic.pipeline.export.samples import Sample, drop_nulls, json_default
from photogenic.pipeline.export.writers import FormatReport

FOLDER = "img2dataset"
TAR_MTIME = 0  # reproducible tars, as in the webdataset writer
SHARD_DIGITS = 5  # img2dataset's oom_shard_count
SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("url", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()),
    ("original_width", pa.int64()), ("original_height", pa.int64()),
    ("exif", pa.string()), ("sha256", pa.string()),
    ("status", pa.string()), ("error_message", pa.string()),
    ("photogenic_key", pa.string()), ("split", pa.string()),
    ("source_ext", pa.string()), ("transcoded", pa.bool_()),
])


def sample_digits(shard_size: int) -> int:
    """img2dataset's oom_sample_per_shard."""
    return math.ceil(math.log10(shard_size)) if shard_size > 1 else 0


class _Split:
    """The shards of one split: the open tar and the rows of its parquet."""

    def __init__(self, folder: Path, shard_size: int) -> None:
        self.folder, self.shard_size = folder, shard_size
        self.shard, self.tar, self.rows = -1, None, []
        self.files: list[Path] = []

    def key(self) -> str:
        digits = sample_digits(self.shard_size)
        n = self.shard * 10**digits + len(self.rows)
        return f"{n:0{SHARD_DIGITS + digits}d}"

    def sink(self):
        import webdataset as wds

        if self.tar is None or len(self.rows) >= self.shard_size:
            self.finish()
            self.shard += 1
            self.folder.mkdir(parents=True, exist_ok=True)
            self.tar = wds.TarWriter(str(self.path(".tar")), encoder=False, mtime=TAR_MTIME)
        return self.tar

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.shard:0{SHARD_DIGITS}d}{suffix}"

    def finish(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        pq.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA), self.path(".parquet"))
        n = len(self.rows)
        stats = {"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
                 # Fixed times: an export of the same inputs is byte-identical.
                 "duration": 0.0, "start_time": 0.0, "end_time": 0.0,
                 "status_dict": {"success": n}}
        self.path("_stats.json").write_text(json.dumps(stats, indent=4, sort_keys=True) + "\n")
        self.files += [self.path(s) for s in (".tar", ".parquet", "_stats.json")]
        self.tar, self.rows = None, []


class Writer:
    format = "img2dataset"

    def __init__(self, root: Path, config: ExportConfig) -> None:
        self.root, self.folder, self.config = root, root / FOLDER, config
        self.splits: dict[str, _Split] = {}
        self.rows = 0

    def write(self, sample: Sample) -> dict[str, Any]:
        from PIL import Image

        split = self.splits.setdefault(sample.split, _Split(self.folder / sample.split,
                                                              self.config.shard_size))
        sink = split.sink()
        key = split.key()
        image = tar_image(sample, self.config)
        try:
            with Image.open(io.BytesIO(image.data)) as im:
                width, height = im.size
        except Exception:  # noqa: BLE001 - bytes kept as they are ("original" of an odd format)
            width = height = None

        row = {
            "key": key, "caption": sample.text, "url": sample.record.get("source"),
            "width": width, "height": height,
            "original_width": sample.record.get("width"),
            "original_height": sample.record.get("height"),
            "exif": None, "sha256": hashlib.sha256(image.data).hexdigest(),
            "status": "success", "error_message": None,
            "photogenic_key": sample.key, "split": sample.split,
            "source_ext": image.source_ext, "transcoded": image.transcoded,
        }
        record = json.loads(sample.tar_json(image.describe()))
        meta = {**drop_nulls(row), "photogenic": record}
        sink.write({
            "__key__": key,
            image.ext: image.data,
            "txt": sample.text.encode(),
            "json": json.dumps(meta, sort_keys=True, default=json_default).encode(),
        })
        split.rows.append(row)
        self.rows += 1
        return {"i2d_shard": str(split.path(".tar").relative_to(self.root)), "i2d_key": key}

    def close(self) -> FormatReport:
        for split in self.splits.values():
            split.finish()
        files = sorted(str(p.relative_to(self.root)) for s in self.splits.values() for p in s.files)
        return FormatReport(self.format, files, self.rows)
