"""Read an image's bytes back from the pool by its `source` (no images are copied into scores):
the dispatch to the format that wrote that kind of source string."""
from __future__ import annotations

from photogenic.pipeline.pool.base import SourceError
from photogenic.pipeline.pool.formats import FORMATS

__all__ = ["SourceError", "read_source"]


def read_source(source: str) -> bytes:
    """The exact bytes of the image that `source` points at."""
    for fmt in FORMATS:
        if fmt.owns_source(source):
            return fmt.read_source(source)
    raise SourceError(f"no pool format reads source {source!r}")
