"""Atomic, rerunnable outputs: temp name, then rename, then a marker."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SUCCESS = "_SUCCESS"
TMP_MARK = ".tmp-"


def tmp_path(path: Path) -> Path:
    # Hidden and suffixed so readers (DuckDB globs, Spark) never pick up a half-written file.
    return path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def _fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def write_parquet_atomic(table: pa.Table, path: str | Path, **kwargs: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    pq.write_table(table, tmp, **kwargs)
    _fsync_rename(tmp, path)
    return path


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    _fsync_rename(tmp, path)
    return path


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    tmp.write_bytes(data)
    _fsync_rename(tmp, path)
    return path


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Publish a finished directory: the old one moves aside, the new one is renamed in, the old
    one is removed. Readers see the old or the new directory, never a half-built one."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def stable_id(path: str | Path) -> str:
    """The id stored at `path`, created once; concurrent first callers all get the same one."""
    path = Path(path)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex
    tmp = path.with_name(f".{path.name}.{value}")
    tmp.write_text(value + "\n")
    try:
        os.link(tmp, path)  # fails if another process won the race; its id is then the one
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def mark_success(directory: str | Path) -> None:
    write_json_atomic({"ok": True}, Path(directory) / SUCCESS)


def is_complete(directory: str | Path) -> bool:
    return (Path(directory) / SUCCESS).exists()


def clear_success(directory: str | Path) -> None:
    (Path(directory) / SUCCESS).unlink(missing_ok=True)


def remove_stale_tmp(directory: str | Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    directory = Path(directory)
    if not directory.exists():
        return 0
    n = 0
    for p in directory.rglob(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n
