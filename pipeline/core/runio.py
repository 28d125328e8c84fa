"""The storage seam: every run file is written and listed here (today local files; the object-store
issue puts fsspec behind these same functions). Atomic, rerunnable outputs: temp name, then
rename, then a marker."""
from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


def _write_atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    write(tmp)
    _fsync_rename(tmp, path)
    return path


def write_parquet_atomic(table: pa.Table, path: str | Path, **kwargs: Any) -> Path:
    return _write_atomic(path, lambda tmp: pq.write_table(table, tmp, **kwargs))


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return _write_atomic(path, lambda tmp: tmp.write_text(text))


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    return _write_atomic(path, lambda tmp: tmp.write_bytes(data))


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Publish a finished directory: the new one takes the old one's place, the old one is
    removed. Readers see the old or the new directory, never a half-built one (and on Linux never
    a moment without one: the two are swapped in one rename)."""
    tmp, final = Path(tmp), Path(final)
    if final.exists() and _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old directory
        return
    old = None
    if final.exists():
        old = build_name(final, "old")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


@functools.lru_cache(maxsize=1)
def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a libc without it
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two existing paths atomically (Linux renameat2 RENAME_EXCHANGE). False where the
    system or file system cannot; the caller then renames in two steps, which reports any real
    error (permissions, a vanished folder) itself."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


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


# --- shared helpers: one copy each -----------------------------------------------------------


class CorruptFile(ValueError):
    """A run file exists but cannot be parsed."""


def read_json(path: str | Path, *, strict: bool = False) -> Any:
    """Parsed JSON at `path`; None when it is missing. A corrupt file raises CorruptFile when
    `strict`, else reads as None (a summary half-written by a killed run is as good as none)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        if strict:
            raise CorruptFile(f"cannot read {path}: {err}") from None
        return None


def committed_parquet(directory: str | Path) -> list[Path]:
    """Parquet files a stage committed under `directory`, sorted. Names starting with "." (a
    writer's temp file, runio.tmp_path) or "_" (side tables such as _dropped/, _stats/) are skipped
    at every level."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def sql_quote(value: object) -> str:
    """`value` as a SQL string literal (DuckDB and Spark SQL): quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def build_name(final: str | Path, what: str = "tmp") -> Path:
    """A hidden sibling of `final` for a folder being built (`.NAME.tmp-XXXXXXXX`)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{what}-{uuid.uuid4().hex[:8]}")


def remove_stale_builds(final: str | Path) -> int:
    """Delete temp and moved-aside siblings of `final` that a killed build left; returns how many."""
    final = Path(final)
    n = 0
    for p in final.parent.glob(f".{final.name}.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


@contextmanager
def publishing(final: str | Path) -> Iterator[Path]:
    """Build a folder under a temp name and publish it as `final` when the block succeeds:

        with publishing(run.export) as tmp:
            write_everything(tmp)

    Readers see the old folder or the new one, never a half-built one (replace_dir); on an
    error the temp folder is removed and `final` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = build_name(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
