"""The pool formats, in discovery order: a folder holding .tar shards is a webdataset pool (any
parquet files there are tar sidecars), else one holding .parquet files is a parquet pool (images
beside them are referenced by path), else an image folder. A new format is one module with the
interface in base.py and one line here."""
from __future__ import annotations

from photogenic.pipeline.pool import folder, parquet, tar

FORMATS = (tar, parquet, folder)
BY_KIND = {f.KIND: f for f in FORMATS}
