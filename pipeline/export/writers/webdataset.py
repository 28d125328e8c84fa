"""webdataset/{train,validation}-NNNNN.tar: KEY.<ext>, KEY.txt, KEY.json per sample."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from photogenic.pipeline.core.config.training import ExportConfig
from photogenic.pipeline.export.samples import Sample
from photogenic.pipeline.export.writers import FormatReport

FOLDER = "webdataset"
# Reproducible tars: a fixed member mtime (SOURCE_DATE_EPOCH style) instead of "now".
TAR_MTIME = 0


class Writer:
    format = "webdataset"

    def __init__(self, root: Path, config: ExportConfig) -> None:
        self.root, self.folder = root, root / FOLDER
        self.shard_size = config.shard_size
        self.shards: dict[str, Any] = {}  # split -> webdataset.ShardWriter, opened on first use
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
        sink.write({
            "__key__": sample.name,
            sample.ext: sample.data,
            "txt": sample.text.encode(),
            "json": sample.record_json(),
        })
        self.rows += 1
        # After the write: a full shard rolls over to the next file before taking the sample.
        return {"wds_shard": f"{FOLDER}/{Path(sink.fname).name}", "wds_key": sample.name}

    def close(self) -> FormatReport:
        for sink in self.shards.values():
            sink.close()
        files = sorted(str(p.relative_to(self.root)) for p in self.folder.glob("*.tar"))
        return FormatReport(self.format, files, self.rows)
