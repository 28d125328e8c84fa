"""`photogenic export`: the curated set as webdataset shards, a parquet manifest and an imagefolder.

Reads the keep decisions of a review pass (or all candidates), joins them to their score rows,
reads each image from the pool (by its `source`) and writes, atomically (docs/export.md):

    OUT/webdataset/{train,validation}-NNNNN.tar   KEY.jpg, KEY.txt, KEY.json per sample (JPEG
                                                  bytes as they are, other formats encoded as
                                                  JPEG: export/images.py)
    OUT/wids/{train,validation}.json              the shard lists wids reads
    OUT/imagefolder/{train,validation}/           the original bytes + metadata.jsonl (file_name,
                                                  text, key)
    OUT/img2dataset/{train,validation}/           NNNNN.tar + NNNNN.parquet + NNNNN_stats.json
                                                  (only when listed in `[export] formats`)
    OUT/manifest.parquet                          one row per exported image
    OUT/lineage.json                              config, thresholds, models, versions, counts,
                                                  sha256 of every exported file
    OUT/_summary.json                             the stage summary (core/summary.py)
    OUT/_SUCCESS

`[export] formats` picks the formats (one writer each, in writers/); the manifest and lineage are
always written. The whole folder is built under a temp name and renamed into place. A rerun with
the same inputs and config skips; with changed inputs it rebuilds (the output of identical inputs
is identical, byte for byte: fixed tar mtimes, sorted keys, no timestamps).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import (
    is_complete,
    mark_success,
    publishing,
    read_json,
    remove_stale_builds,
)
from photogenic.pipeline.core.storage import as_path, configure as configure_storage
from photogenic.pipeline.core.summary import StageSummary, write_summary
from photogenic.pipeline.core.config.review import export_sources
from photogenic.pipeline.export.curated import ExportError, load_curated, load_score_rows
from photogenic.pipeline.export.images import ImageError, tar_image
from photogenic.pipeline.export.lineage import (
    LINEAGE,
    build_lineage,
    file_hashes,
    input_fingerprint,
)
from photogenic.pipeline.export.manifest import Manifest
from photogenic.pipeline.export.samples import (
    Skip,
    Written,
    assign_splits,
    json_default,
    make_sample,
    safe_name,
    split_of,
)
from photogenic.pipeline.export.writers import open_writers
from photogenic.pipeline.pool.sources import SourceError, read_source

__all__ = ["ExportError", "ExportResult", "export_run", "verify_export", "export_cmd",
           "assign_splits", "safe_name", "split_of"]

# Why a kept key was not exported: summary reason -> the message lineage.json records.
SKIP_NO_SCORE = "no_score_row"
SKIP_UNREADABLE = "unreadable_source"
SKIP_CHANGED = "bytes_changed"
SKIP_UNDECODABLE = "undecodable_image"
# The formats that store a .jpg per sample (images.tar_image).
TAR_FORMATS = ("webdataset", "img2dataset")


@dataclass
class ExportResult:
    out: Path
    skipped_run: bool  # True when an up-to-date export was already there
    counts: dict[str, int] = field(default_factory=dict)


def _read_image(key: str, score: dict[str, Any] | None) -> bytes | Skip:
    if score is None:
        return Skip(key, SKIP_NO_SCORE, "no score row in candidates or scores")
    try:
        data = read_source(score["source"] or "")
    except SourceError as err:
        return Skip(key, SKIP_UNREADABLE, f"unreadable source: {err}")
    if score.get("sha256") and score["sha256"] != hashlib.sha256(data).hexdigest():
        return Skip(key, SKIP_CHANGED, "image bytes changed since scoring (sha256)")
    return data


def write_samples(run: RunDir, stage: str, config, root: Path) -> Written:
    """Export every kept key of `stage` into `root`, in key order; returns counts and skips."""
    from tqdm import tqdm

    curated, read_counts = load_curated(run, stage)
    decisions = {row["key"]: row for row in curated.to_pylist()}
    keys = sorted(decisions)
    scores = load_score_rows(run, keys)
    splits = assign_splits(keys, config.validation_fraction, config.split_salt)
    writers, manifest, skipped = open_writers(root, config), Manifest(), []
    for key in tqdm(keys, desc="export", unit="img", disable=len(keys) < 200):
        data = _read_image(key, scores.get(key))
        if isinstance(data, Skip):
            skipped.append(data)
            continue
        sample = make_sample(key, data, scores[key], decisions[key], stage, splits[key])
        if any(w.format in TAR_FORMATS for w in writers):
            try:  # before any writer stores the sample: one that cannot be encoded is a skip
                tar_image(sample, config)
            except ImageError as err:
                skipped.append(Skip(key, SKIP_UNDECODABLE, str(err)))
                continue
        manifest.add(sample, {w.format: w.write(sample) for w in writers})
        failpoint("export.sample")
    if not len(manifest):
        raise ExportError(
            f"nothing to export from {stage}: {read_counts['kept']} kept, {len(skipped)} skipped"
            + (f" (first: {skipped[0].message})" if skipped else ""))
    reports = [w.close() for w in writers]
    manifest.write(root)
    return Written(read=read_counts, curated=len(keys), exported=len(manifest),
                   splits=manifest.split_counts(), skipped=skipped,
                   formats={r.format: {"files": len(r.files), "rows": r.rows} for r in reports})


def _summary(stage: str, config, written: Written, fingerprint: str, seconds: float) -> StageSummary:
    return StageSummary(
        stage="export", input_fingerprint=fingerprint, rows_in=written.curated,
        rows_out=written.exported, by_reason=dict(Counter(s.reason for s in written.skipped)),
        seconds=seconds, config=config.export.model_dump(mode="json"),
        details={"from": stage, "splits": written.splits, "formats": written.formats})


def export_run(run: str | Path, out: str | Path | None = None, stage: str | None = None,
               config=None, force: bool = False) -> ExportResult:
    """Export the curated set of `run` (stage: candidates or a review pass; None: the last
    pass); see the module docstring for the layout."""
    from photogenic.pipeline.core.config import Config

    config = config or Config()
    stage = stage or config.review.last_pass.name
    if stage not in export_sources(config.review):
        raise ExportError(f"--from must be one of {', '.join(export_sources(config.review))}, not {stage!r}")
    configure_storage(config.storage.options)
    run = RunDir.of(run)
    if not run.root.exists():
        raise ExportError(f"run directory not found: {run.root}")
    out = as_path(out) if out else run.export
    fingerprint = input_fingerprint(run, stage, config.export)
    if not force and is_complete(out):
        lineage = read_json(out / LINEAGE) or {}
        if lineage.get("input_fingerprint") == fingerprint:
            return ExportResult(out, True, lineage.get("counts", {}))
    remove_stale_builds(out)
    started = time.monotonic()
    with publishing(out) as tmp:
        written = write_samples(run, stage, config.export, tmp)
        lineage = build_lineage(run, stage, config, written, tmp, fingerprint)
        (tmp / LINEAGE).write_text(
            json.dumps(lineage, indent=2, sort_keys=True, default=json_default) + "\n")
        write_summary(tmp, _summary(stage, config, written, fingerprint,
                                    time.monotonic() - started))
        mark_success(tmp)
    return ExportResult(out, False, lineage["counts"])


def verify_export(out: str | Path) -> list[str]:
    """Problems found re-hashing an export against its lineage.json (empty list: all verify)."""
    out = as_path(out)
    lineage = read_json(out / LINEAGE)
    if lineage is None:
        return [f"{out / LINEAGE} missing or unreadable"]
    problems = []
    recorded = lineage.get("files", {})
    actual = file_hashes(out)
    for rel, sha in recorded.items():
        if rel not in actual:
            problems.append(f"missing: {rel}")
        elif actual[rel] != sha:
            problems.append(f"sha256 differs: {rel}")
    problems += [f"not in lineage: {rel}" for rel in actual if rel not in recorded]
    if not is_complete(out):
        problems.append("no _SUCCESS marker")
    return problems


@click.command("export")
@click.option("--run", "run_dir", required=True,
              help="Run directory (reads review decisions, candidates, scores); a path or a URL.")
@click.option("--from", "stage", help="Which decisions define the curated set: candidates or a review "
                                     "pass of [[review.passes]] (default: the last pass).")
@click.option("--out", "out_dir", help="Output folder (default RUN/export); a path or a URL.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--force", is_flag=True, help="Rebuild even if an up-to-date export exists.")
@click.option("--verify", "verify_only", is_flag=True,
              help="Only re-hash an existing export against its lineage.json.")
def export_cmd(run_dir, stage, out_dir, config_path, force, verify_only) -> None:
    """Export the curated set: webdataset shards, parquet manifest, imagefolder, lineage
    (docs/export.md)."""
    from photogenic.pipeline.core.config import ConfigError, load_config

    out = as_path(out_dir) if out_dir else RunDir.of(run_dir).export
    if verify_only:
        problems = verify_export(out)
        for p in problems:
            click.echo(p, err=True)
        if problems:
            raise click.ClickException(f"{len(problems)} problem(s) in {out}")
        click.echo(f"{out}: every file matches lineage.json")
        return
    try:
        config = load_config(config_path)
        stage = stage or config.review.last_pass.name  # said in the message below
        result = export_run(run_dir, out, stage, config, force=force)
    except (ExportError, ConfigError, OSError) as err:
        raise click.ClickException(str(err)) from None
    if result.skipped_run:
        click.echo(f"{out}: up to date ({result.counts.get('exported')} images), skipped")
        return
    c = result.counts
    click.echo(
        f"exported {c['exported']} images from {stage} to {out} "
        f"(train {c['splits']['train']}, validation {c['splits']['validation']}, "
        f"skipped {c['skipped']})"
    )
