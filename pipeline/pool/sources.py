"""Read an image's bytes back from the pool by its `source` (no images are copied into scores)."""
from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from photogenic.pipeline.pool.readers import IMAGE_BYTES_COLUMNS


class SourceError(LookupError):
    pass


@functools.lru_cache(maxsize=64)
def _tar_index(tar_path: str) -> dict[str, tuple[int, int]]:
    # Scanning headers skips data blocks; cached so reading many members of a shard is cheap.
    index = {}
    with tarfile.open(tar_path, "r:") as tf:
        for m in tf:
            if m.isfile():
                index[m.name] = (m.offset_data, m.size)
    return index


def read_source(source: str) -> bytes:
    """The exact bytes of the image that `source` points at."""
    if "::" in source:
        container, member = source.rsplit("::", 1)
        if member.startswith("row=") and container.endswith(".parquet"):
            return _parquet_row(container, int(member[4:]))
        try:
            offset, size = _tar_index(container)[member]
        except (KeyError, OSError, tarfile.TarError) as err:
            raise SourceError(f"{member} not found in {container}: {err}") from None
        with open(container, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    try:
        return Path(source).read_bytes()
    except OSError as err:
        raise SourceError(f"cannot read {source}: {err}") from None


def _parquet_row(path: str, row: int) -> bytes:
    pf = pq.ParquetFile(path)
    col = next((c for c in IMAGE_BYTES_COLUMNS if c in pf.schema_arrow.names), None)
    if col is None:
        raise SourceError(f"{path} has no image bytes column")
    start = 0
    for rg in range(pf.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row < start + n:
            value = pf.read_row_group(rg, columns=[col]).column(0)[row - start].as_py()
            return value["bytes"] if isinstance(value, dict) else value
        start += n
    raise SourceError(f"row {row} past the end of {path}")
