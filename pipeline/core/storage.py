"""Where bytes live: a local path or a URL (s3://, gs://, abfs://, hdfs://, file://), through fsspec.

Every stage turns its pool, run and export arguments into paths with `as_path`: a plain
`pathlib.Path` for local files (so the local code path is the one it always was) and a
`upath.UPath` (pathlib's API over fsspec) for URLs. Arrow reads and writes get the matching
filesystem from `arrow_args`; DuckDB gets it through `register_filesystems`.

Credentials and endpoints come from the standard environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...) that each fsspec backend reads itself,
and from the optional `[storage]` config section (options per protocol), installed in this
process by `configure`. Options are never written into run files: the config's JSON dump masks
secret-looking keys (see StorageConfig).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec

LOCAL_PROTOCOLS = ("file", "local")
_OPTIONS: dict[str, dict[str, Any]] = {}


class StorageError(OSError):
    """A store could not be reached or refused a request; the message says which URL."""


def cache_root() -> Path:
    """Photogenic's local cache (copies of remote inputs, run locks, the sample pool's photos,
    Label Studio's virtualenv): PHOTOGENIC_CACHE, else the user's cache dir from platformdirs
    ($XDG_CACHE_HOME/photogenic, by default ~/.cache/photogenic, on Linux)."""
    if os.environ.get("PHOTOGENIC_CACHE"):
        return Path(os.environ["PHOTOGENIC_CACHE"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("photogenic", appauthor=False))


def data_root() -> Path:
    """Photogenic's local data that is not a cache (the local Label Studio's database and
    secrets): PHOTOGENIC_DATA, else the user's data dir from platformdirs ($XDG_DATA_HOME/photogenic,
    by default ~/.local/share/photogenic, on Linux)."""
    if os.environ.get("PHOTOGENIC_DATA"):
        return Path(os.environ["PHOTOGENIC_DATA"])
    import platformdirs

    return Path(platformdirs.user_data_dir("photogenic", appauthor=False))


def store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning a store could not be reached or refused a request (OSError, and
    botocore's own errors, which s3fs lets through for connection failures)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass
    return tuple(errors)


def configure(options: dict[str, dict[str, Any]] | None) -> None:
    """Install per-protocol storage options (the `[storage]` section) for this process."""
    _OPTIONS.clear()
    for protocol, opts in (options or {}).items():
        _OPTIONS[protocol] = dict(opts)


def protocol_of(location: str | os.PathLike) -> str:
    text = os.fspath(location) if not isinstance(location, str) else location
    if "://" not in text:
        return "file"
    return text.split("://", 1)[0].lower()


def is_remote(location: str | os.PathLike) -> bool:
    return protocol_of(_text(location)) not in LOCAL_PROTOCOLS


def _text(location: Any) -> str:
    return location if isinstance(location, str) else str(location)


def options_for(protocol: str) -> dict[str, Any]:
    opts = dict(_OPTIONS.get(protocol, {}))
    if protocol in ("s3", "s3a") and "endpoint_url" not in opts and os.environ.get("AWS_ENDPOINT_URL_S3"):
        opts["endpoint_url"] = os.environ["AWS_ENDPOINT_URL_S3"]
    return opts


def as_path(location: str | os.PathLike) -> Any:
    """A local `Path`, or a `UPath` for a URL; `file://` URLs become local paths."""
    text = _text(location)
    protocol = protocol_of(text)
    if protocol in LOCAL_PROTOCOLS:
        return Path(text.split("://", 1)[1]) if "://" in text else Path(text)
    from upath import UPath

    return UPath(text, **options_for("s3" if protocol == "s3a" else protocol))


def location(path: Any) -> str:
    """A path as the string stored in run files: absolute local path, or the URL."""
    if is_remote(path):
        return _text(path)
    return str(Path(_text(path).removeprefix("file://")).resolve())


def filesystem(path: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for a local path or URL."""
    text = _text(path)
    if not is_remote(text):
        return fsspec.filesystem("file"), str(Path(text.removeprefix("file://")))
    protocol = protocol_of(text)
    fs, inner = fsspec.core.url_to_fs(text, **options_for("s3" if protocol == "s3a" else protocol))
    return fs, inner


def arrow_args(path: Any) -> tuple[str, Any]:
    """(path, filesystem) for pyarrow: local paths need none; URLs get their fsspec filesystem."""
    if not is_remote(path):
        return _text(path), None
    fs, inner = filesystem(path)
    return inner, fs


def open_input(path: Any, *, stream: bool = False):
    """A binary file object for reading. `stream` reads ahead in modest blocks (tar shards are
    read front to back, never downloaded whole)."""
    if not is_remote(path):
        return open(_text(path), "rb")
    fs, inner = filesystem(path)
    if stream:
        return fs.open(inner, "rb", block_size=8 * 2**20, cache_type="readahead")
    return fs.open(inner, "rb")


def register_filesystems(con, paths: list[Any]) -> None:
    """Let a DuckDB connection read the stores `paths` live in (no httpfs extension needed)."""
    seen = set()
    for p in paths:
        if not is_remote(p):
            continue
        fs, _ = filesystem(p)
        if id(fs) in seen:
            continue
        seen.add(id(fs))
        registered = set(con.list_filesystems())
        if not registered & set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            con.register_filesystem(fs)


def duckdb_location(path: Any) -> str:
    """A path as DuckDB should read it once `register_filesystems` ran: the URL itself."""
    text = _text(path)
    return text.replace("s3a://", "s3://", 1) if text.startswith("s3a://") else text
