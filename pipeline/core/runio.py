"""The storage seam: every run file is written and listed here, on local disk or an object store
(core/storage.py). Atomic, rerunnable outputs without relying on rename where a store has none:

- one file: local disk writes a temp name and renames it; a store's PUT (or completed multipart
  upload) is atomic by itself, and a failed write is aborted, never committed half-written;
- a part of a stage written by many tasks: an attempt-unique name, committed by a marker written
  after it that names it (filtering/job.py); readers list markers, never data files;
- a whole folder (`publishing`): built aside, then published: on local disk swapped in with one
  rename; on a store uploaded under its final prefix and committed by `_SUCCESS` written last,
  which its readers check (`is_complete`)."""
from __future__ import annotations

import ctypes
import re
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

from photogenic.pipeline.core.storage import StorageError, arrow_args, as_path, filesystem, is_remote

SUCCESS = "_SUCCESS"
TMP_MARK = ".tmp-"


def tmp_path(path: Path) -> Path:
    # Hidden and suffixed so readers (DuckDB globs, Spark) never pick up a half-written file.
    return path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def _fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def write_file_atomic(path: str | Path, write) -> Path:
    """Write a file through `write(binary_file)` so readers see all of it or nothing."""
    path = as_path(path)
    if is_remote(path):
        _write_object(path, write)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _write_object(path, write) -> None:
    fs, inner = filesystem(path)
    try:
        fh = fs.open(inner, "wb")
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err}") from err
    try:
        write(fh)
    except BaseException:
        # Closing would upload what was written so far; discard aborts it instead.
        getattr(fh, "discard", lambda: None)()
        raise
    try:
        fh.close()  # the commit point: the object exists from here on, complete
    except Exception as err:  # a store that went away mid-upload: nothing was committed
        getattr(fh, "discard", lambda: None)()
        raise StorageError(f"cannot write {path}: {err}") from err


def write_parquet_atomic(table: pa.Table, path: str | Path, **kwargs: Any) -> Path:
    return write_file_atomic(path, lambda fh: pq.write_table(table, fh, **kwargs))


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_file_atomic(path, lambda fh: fh.write(text.encode()))


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    return write_file_atomic(path, lambda fh: fh.write(data))


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
    """The id stored at `path`, created once; concurrent first callers all get the same one.

    Local disk: written aside and hard-linked into place (the link fails if another process won).
    A store: an exclusive create (`fs.open(path, "xb")`, S3's PUT with If-None-Match: *), so the
    first writer's id is the one; where a backend has no exclusive create, written and read back:
    a first call that races another may then return an id the other overwrote, so such stores
    rely on one process creating a run's ids (the review commands create theirs in `push`)."""
    if is_remote(path):
        return _stable_id_remote(as_path(path))
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


def _stable_id_remote(path) -> str:
    fs, inner = filesystem(path)
    try:
        if fs.exists(inner):
            return fs.cat_file(inner).decode().strip()
        value = (uuid.uuid4().hex + "\n").encode()
        try:
            with fs.open(inner, "xb") as fh:
                fh.write(value)
        except FileExistsError:
            pass  # another process created it first: its id is the one
        except (ValueError, NotImplementedError, TypeError):
            # no exclusive create on this backend: write, then whatever reads back wins
            with fs.open(inner, "wb") as fh:
                fh.write(value)
        fs.invalidate_cache(inner)
        return fs.cat_file(inner).decode().strip()
    except OSError as err:
        raise StorageError(f"cannot create {path}: {err}") from err


def mark_success(directory: str | Path) -> None:
    write_json_atomic({"ok": True}, as_path(directory) / SUCCESS)


def is_complete(directory: str | Path) -> bool:
    return (as_path(directory) / SUCCESS).exists()


def clear_success(directory: str | Path) -> None:
    marker = as_path(directory) / SUCCESS
    if marker.exists():
        marker.unlink()


def remove_stale_tmp(directory: str | Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    directory = as_path(directory)
    if is_remote(directory) or not directory.exists():
        return 0  # stores get no temp files: their writes are atomic (_write_object)
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
    path = as_path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        if strict:
            raise CorruptFile(f"cannot read {path}: {err}") from None
        return None


PART_MARKERS = "_stats"  # a task-written folder's commit markers (filtering/job.py)


def committed_parquet(directory: str | Path) -> list[Path]:
    """Parquet files a stage committed under `directory`, sorted.

    A folder written part by part (the filter job's scores, embeddings) has a marker per part in
    `_stats/`, naming the part it commits: only those parts count, so an unfinished or duplicate
    task attempt's file is never read. Elsewhere (a folder published whole), every parquet file
    whose path has no part starting with "." (a temp file) or "_" (side tables such as _dropped/)."""
    directory = as_path(directory)
    markers = directory / PART_MARKERS
    if (directory / "_job.json").exists():
        return sorted(directory / name for name in committed_part_names(markers))
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def part_identity(name: str) -> str:
    """A part's name without the attempt id it was written under (`part-X.attempt-ID.parquet`)."""
    return re.sub(r"\.attempt-[0-9a-f]+(?=\.parquet$)", "", name)


def committed_part_names(markers: Path) -> list[str]:
    """The part file names the markers in `markers` commit (one per marker, sorted)."""
    names = []
    for marker in sorted(markers.glob("*.json")) if markers.is_dir() else []:
        stats = read_json(marker)
        if stats is not None:
            names.append(stats.get("part") or f"part-{stats['shard']}.parquet")
    return names


def read_parquet(path: str | Path, **kwargs: Any) -> pa.Table:
    """A parquet file as a table, from local disk or a store (range reads)."""
    source, fs = arrow_args(path)
    return pq.read_table(source, filesystem=fs, **kwargs)


def parquet_rows(path: str | Path) -> int:
    source, fs = arrow_args(path)
    return pq.ParquetFile(source, filesystem=fs).metadata.num_rows


def file_signature(path: str | Path) -> str:
    """Size and change stamp of a file (mtime on disk; the store's ETag or mtime for objects)."""
    if is_remote(path):
        fs, inner = filesystem(path)
        info = fs.info(inner)
        return f"{info.get('size')}:{info.get('ETag') or info.get('LastModified') or info.get('mtime')}"
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def sql_quote(value: object) -> str:
    """`value` as a SQL string literal (DuckDB and Spark SQL): quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def build_name(final: str | Path, what: str = "tmp") -> Path:
    """A hidden sibling of `final` for a folder being built (`.NAME.tmp-XXXXXXXX`)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{what}-{uuid.uuid4().hex[:8]}")


def remove_stale_builds(final: str | Path) -> int:
    """Delete temp and moved-aside siblings of `final` that a killed build left; returns how many."""
    if is_remote(final):
        return 0  # a store's folders are built in a local temp folder (_publishing_remote)
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
    if is_remote(final):
        with _publishing_remote(as_path(final)) as tmp:
            yield tmp
        return
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = build_name(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _publishing_remote(final) -> Iterator[Path]:
    """A store has no rename: build in a local temp folder, then clear `final`'s marker, replace
    its objects and write the marker last. Readers check the marker (`is_complete`), so they see
    the old folder, none, or the new one, never a mix they would accept."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="photogenic-publish-"))
    try:
        yield tmp
        upload_tree(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload_tree(local: Path, final, exclude: tuple[str, ...] = ()) -> None:
    """Publish the local folder `local` as `final` on a store; `_SUCCESS` is written last.
    `exclude`: relative folders left out (e.g. a cache that must not ship)."""
    fs, inner = filesystem(final)
    clear_success(final)
    try:
        if fs.exists(inner):
            fs.rm(inner, recursive=True)
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != SUCCESS
                       and not any(p.relative_to(local).as_posix().startswith(e + "/") for e in exclude))
        for p in files:
            fs.put_file(str(p), f"{inner}/{p.relative_to(local).as_posix()}")
    except Exception as err:  # s3fs raises botocore's errors too, e.g. a refused connection
        raise StorageError(f"cannot publish {final}: {err}") from err
    mark_success(final)
