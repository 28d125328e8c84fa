"""imagefolder/{train,validation}/: the images plus metadata.jsonl (file_name, text, key), the
layout `datasets.load_dataset("imagefolder")`, diffusers' scripts and our trainer read."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from photogenic.pipeline.core.config.training import ExportConfig
from photogenic.pipeline.export.samples import SPLITS, Sample
from photogenic.pipeline.export.writers import FormatReport

FOLDER = "imagefolder"
METADATA = "metadata.jsonl"


class Writer:
    format = "imagefolder"

    def __init__(self, root: Path, config: ExportConfig) -> None:
        self.root, self.folder = root, root / FOLDER
        self.metadata: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.files: list[str] = []

    def write(self, sample: Sample) -> dict[str, Any]:
        folder = self.folder / sample.split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / sample.file_name).write_bytes(sample.data)
        rel = f"{FOLDER}/{sample.split}/{sample.file_name}"
        self.files.append(rel)
        self.metadata[sample.split].append(json.dumps(
            {"file_name": sample.file_name, "text": sample.text, "key": sample.key},
            ensure_ascii=False))
        return {"file_name": rel}

    def close(self) -> FormatReport:
        files = list(self.files)
        for split, lines in self.metadata.items():
            if lines:
                (self.folder / split / METADATA).write_text("\n".join(lines) + "\n")
                files.append(f"{FOLDER}/{split}/{METADATA}")
        return FormatReport(self.format, sorted(files), sum(map(len, self.metadata.values())))
