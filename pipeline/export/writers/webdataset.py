"""webdataset/{train,validation}-NNNNN.tar: KEY.jpg, KEY.txt, KEY.json per sample, and
wids/{train,validation}.json, the shard lists wids (webdataset's indexed reader) opens (beside
the tars' folder, which holds tars only).

Every sample has the same three members, whatever the pool's image formats: non-JPEG images are
encoded as JPEG (images.py says why and how; `[export] tar_images = "original"` keeps each
image's own bytes and extension instead). KEY.json says which under `export.image`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from photogenic.pipeline.core.config.training import ExportConfig
from photogenic.pipeline.export.images import tar_image
from photogenic.pipeline.export.samples import Sample
from photogenic.pipeline.export.writers import FormatReport

FOLDER = "webdataset"
# Reproducible tars: a fixed member mtime (SOURCE_DATE_EPOCH style) instead of "now".
TAR_MTIME = 0
WIDS_FOLDER = "wids"


class Writer:
    format = "webdataset"

    def __init__(self, root: Path, config: ExportConfig) -> None:
        self.root, self.folder, self.config = root, root / FOLDER, config
        self.shard_size = config.shard_size
        self.shards: dict[str, Any] = {}  # split -> webdataset.ShardWriter, opened on first use
        self.counts: dict[str, dict[str, int]] = {}  # split -> shard file name -> samples
        self.rows = 0

    def _shard_writer(self, split: str):
        import webdataset as wds

        if split not in self.shards:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.shards[split] = wds.ShardWriter(
                str(self.folder / f"{split}-%05d.tar"), maxcount=self.shard_size, verbose=0,
                encoder=False, mtime=TAR_MTIME)
        return self.shards[split]

    def write(self, sample: Sample) -> dict[str, Any]:
        sink = self._shard_writer(sample.split)
        image = tar_image(sample, self.config)
        sink.write({
            "__key__": sample.name,
            image.ext: image.data,
            "txt": sample.text.encode(),
            "json": sample.tar_json(image.describe()),
        })
        self.rows += 1
        # After the write: a full shard rolls over to the next file before taking the sample.
        shard = Path(sink.fname).name
        per_shard = self.counts.setdefault(sample.split, {})
        per_shard[shard] = per_shard.get(shard, 0) + 1
        return {"wds_shard": f"{FOLDER}/{shard}", "wds_key": sample.name,
                "wds_transcoded": image.transcoded}

    def close(self) -> FormatReport:
        for sink in self.shards.values():
            sink.close()
        files = [str(p.relative_to(self.root)) for p in self.folder.glob("*.tar")]
        if self.config.wids_index:
            for split, per_shard in self.counts.items():
                path = self.root / WIDS_FOLDER / f"{split}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(wids_index(per_shard), indent=1) + "\n")
                files.append(str(path.relative_to(self.root)))
        return FormatReport(self.format, sorted(files), self.rows)


def wids_index(per_shard: dict[str, int]) -> dict[str, Any]:
    """A wids dataset description. Shard urls are relative (../webdataset/NAME.tar): wids
    resolves them against the folder of the description (`wids.ShardListDataset(
    "OUT/wids/train.json")`), so the export can be moved or copied as a whole. No "name": older wids keyed its shard cache by it, so two
    exports would have shared one cache."""
    return {
        "wids_version": 1,
        "shardlist": [{"url": f"../{FOLDER}/{name}", "nsamples": n} for name, n in sorted(per_shard.items())],
    }
