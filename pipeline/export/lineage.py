"""lineage.json: config, thresholds, models, versions, funnel counts and the sha256 of every
exported file; and the input fingerprint that decides whether a rerun can skip."""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from photogenic.filters.registry import PluginError, builtin_registry, resolve
from photogenic.pipeline.core.summary import read_details
from photogenic.pipeline.core.layout import SUMMARY, RunDir
from photogenic.pipeline.core.runio import (SUCCESS, committed_parquet, file_signature, parquet_rows, read_json,
                                            read_parquet)
from photogenic.pipeline.core.storage import location, open_input
from photogenic.pipeline.export.samples import Written

LINEAGE = "lineage.json"
# Not listed in lineage.json: itself, and the markers written after it.
UNHASHED = (LINEAGE, SUCCESS, SUMMARY)
VERSIONED_PACKAGES = ("photogenic", "pyarrow", "duckdb", "pyspark", "webdataset", "datasets",
                      "pillow", "open_clip_torch", "torch", "nudenet", "rapidocr_onnxruntime",
                      "onnxruntime", "requests", "diffusers")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open_input(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in UNHASHED
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _row_count(files: list[Path]) -> int:
    return sum(parquet_rows(f) for f in files)


def _decision_counts(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    keep = read_parquet(path, columns=["keep"]).column("keep").fill_null(False).to_pylist()
    return {"decided": len(keep), "kept": sum(keep)}


def stage_counts(run: RunDir, review_config) -> dict[str, Any]:
    """Counts at each stage of the funnel, read from what the stages wrote."""
    counts: dict[str, Any] = {}
    score_files = committed_parquet(run.scores)
    if score_files:
        funnel = read_json(run.funnel) or {}
        counts["scores"] = {"rows": _row_count(score_files),
                            "passed": funnel.get("passed"),
                            "reject_reasons": funnel.get("reject_reasons")}
    cand_files = committed_parquet(run.candidates)
    if cand_files:
        counts["candidates"] = {"rows": _row_count(cand_files)}
    for name in review_config.pass_names():
        c = _decision_counts(run.decisions(name))
        if c is not None:
            counts[name] = c
    return counts


def input_fingerprint(run: RunDir, stage: str, export_config) -> str:
    """What the export depends on: decisions/candidates by content, scores by size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"stage": stage, "export": export_config.model_dump(mode="json")},
                        sort_keys=True).encode())
    decisions = run.decisions(stage) if stage != "candidates" else None
    content = [decisions] if decisions is not None and decisions.exists() else []
    for f in content + committed_parquet(run.candidates):
        h.update(f"{f.relative_to(run.root)}:{sha256_file(f)}".encode())
    for f in committed_parquet(run.scores):  # can be huge: stat, not content
        h.update(f"{f.relative_to(run.root)}:{file_signature(f)}".encode())
    return h.hexdigest()


def build_lineage(run: RunDir, stage: str, config, written: Written, root: Path,
                  fingerprint: str) -> dict[str, Any]:
    funnel = read_json(run.funnel) or {}
    filter_config = (funnel.get("config") or {}).get("filters") or config.filters.model_dump(
        mode="json")
    return {
        "run": location(run.root),
        "from": stage,
        "input_fingerprint": fingerprint,
        "config": {
            "export": config.export.model_dump(mode="json"),
            "select": config.select.model_dump(mode="json"),
            "review": config.review.model_dump(mode="json"),
        },
        "thresholds": filter_config,
        "models": _model_names(filter_config, funnel),
        "package_versions": package_versions(),
        "counts": {**stage_counts(run, config.review), "exported": written.exported,
                   "splits": written.splits, "skipped": len(written.skipped),
                   "read_from_stage": written.read},
        "skipped": [s.to_lineage() for s in written.skipped],
        "candidates_summary": read_details(run.candidates) or None,
        "files": file_hashes(root),
    }


def _model_names(filters: dict[str, Any], funnel: dict[str, Any]) -> dict[str, Any]:
    versions = package_versions()
    plugins = ((funnel.get("config") or {}).get("job") or {}).get("plugins") or []
    try:
        filter_classes = resolve(plugins)
    except PluginError:  # a plugin no longer importable here: the built-ins still say what they used
        filter_classes = builtin_registry()
    models: dict[str, Any] = {}
    for cls in filter_classes:  # each filter names its own models (filters/*.py `lineage_models`)
        models.update(cls.lineage_models(filters.get(cls.name) or {}, versions))
    # Filters whose numbers come from random stand-in weights (no real weights here).
    models["meaningless_scores"] = funnel.get("meaningless", [])
    return models
