"""Training where the export and the model live on an object store: the trainer works on local
files (data loaders and checkpoints want a file system), so a remote export is copied once into
the local cache (only what training reads: the imagefolder and lineage.json), and a remote output
is trained in a local work folder and published to the store when training ends. Only the model
folder is uploaded: the training state (checkpoints, latent cache) lives beside it, outside it
(ModelDir.state), and stays in the local work folder, where `--resume` on this machine finds it."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from photogenic.pipeline.core.layout import ExportDir
from photogenic.pipeline.core.runio import SUCCESS, is_complete, mark_success, read_json, upload_tree
from photogenic.pipeline.core.storage import as_path, cache_root, filesystem, is_remote

TRAINING_INPUTS = ("imagefolder",)  # what the trainer reads from an export (training/data.py)


def _cache_dir(kind: str, url: str) -> Path:
    return cache_root() / kind / hashlib.sha256(url.encode()).hexdigest()[:16]


def local_export(data: str | Path) -> Path:
    """A local folder holding the export at `data`: itself when local, else a cached copy,
    refreshed when the remote export's lineage changes."""
    if not is_remote(data):
        return Path(data)
    remote = ExportDir(as_path(data))
    local = _cache_dir("exports", str(data))
    lineage = read_json(remote.lineage)
    if lineage is not None and is_complete(local) and read_json(ExportDir(local).lineage) == lineage:
        return local
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    fs, inner = filesystem(data)
    for name in TRAINING_INPUTS:
        if fs.exists(f"{inner}/{name}"):
            fs.get(f"{inner}/{name}/", str(local / name) + "/", recursive=True)
    if lineage is not None:
        fs.get(f"{inner}/lineage.json", str(ExportDir(local).lineage))
    mark_success(local)
    return local


def local_output(out: str | Path) -> Path:
    """Where the trainer writes: `out` itself when local, else a work folder in the cache (kept
    between runs, so `--resume` on this machine continues it): WORK/model, with the training
    state beside it in WORK/training_state/model."""
    return Path(out) if not is_remote(out) else _cache_dir("models", str(out)) / "model"


def publish_output(local: Path, out: str | Path) -> None:
    """Upload a finished model trained in `local` to the store at `out` (no-op when local)."""
    if not is_remote(out):
        return
    upload_tree(local, as_path(out))  # the model folder only: no training state is in it


__all__ = ["SUCCESS", "local_export", "local_output", "publish_output"]
