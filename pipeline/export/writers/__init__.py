"""Export format writers, one module per format, all behind `FormatWriter`.

The formats there are, and so the names `[export] formats` accepts, are
`photogenic.pipeline.core.config.training.EXPORT_FORMATS`; format NAME is written by class
`Writer` in the module `writers/NAME.py`. A new format: one module here plus its name there.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from photogenic.pipeline.core.config.training import EXPORT_FORMATS, ExportConfig
from photogenic.pipeline.export.samples import Sample


@dataclass
class FormatReport:
    """What one writer wrote: files relative to the export root, and how many samples."""

    format: str
    files: list[str] = field(default_factory=list)
    rows: int = 0


class FormatWriter(Protocol):
    format: str

    def __init__(self, root: Path, config: ExportConfig) -> None: ...

    def write(self, sample: Sample) -> dict[str, Any]:
        """Store one sample; returns its manifest columns (where this format put it)."""

    def close(self) -> FormatReport:
        """Finish every file (called once, after the last sample)."""


def writer_class(name: str) -> type[FormatWriter]:
    if name not in EXPORT_FORMATS:  # the config refuses these already; a direct caller may not
        raise ValueError(f"unknown export format {name!r}; known formats: {', '.join(EXPORT_FORMATS)}")
    return importlib.import_module(f"{__name__}.{name}").Writer


def open_writers(root: Path, config: ExportConfig) -> list[FormatWriter]:
    """One writer per format selected in `config`, in the order listed."""
    return [writer_class(name)(root, config) for name in config.selected_formats]
