"""`photogenic export`: the curated set as webdataset shards, a parquet manifest and an imagefolder.

Reads the keep decisions of a review pass (or all candidates), joins them to their score rows,
copies each image from the pool byte for byte (by its `source`) and writes, atomically:

    OUT/webdataset/{train,validation}-NNNNN.tar   KEY.<ext>, KEY.txt, KEY.json per sample
    OUT/imagefolder/{train,validation}/           images + metadata.jsonl (file_name, text)
    OUT/manifest.parquet                          one row per exported image
    OUT/lineage.json                              config, thresholds, models, versions, counts,
                                                  sha256 of every exported file
    OUT/_SUCCESS

The whole folder is built under a temp name and renamed into place. A rerun with the same inputs
and config skips; with changed inputs it rebuilds (the output of identical inputs is identical,
byte for byte: fixed tar mtimes, sorted keys, no timestamps).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.filters.registry import PluginError, builtin_registry, resolve
from photogenic.pipeline.core.runio import SUCCESS, is_complete, replace_dir
from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.pool.sources import SourceError, read_source

STAGE_DIRS = {"pass2": "review/pass2", "pass1": "review/pass1", "candidates": "candidates"}
SPLITS = ("train", "validation")
# Reproducible tars: a fixed member mtime (SOURCE_DATE_EPOCH style) instead of "now".
TAR_MTIME = 0
FORMAT_EXTS = {"JPEG": "jpg", "JPG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif",
               "BMP": "bmp", "TIFF": "tiff", "MPO": "jpg"}
VERSIONED_PACKAGES = ("photogenic", "pyarrow", "duckdb", "pyspark", "webdataset", "datasets",
                      "pillow", "open_clip_torch", "torch", "nudenet", "rapidocr_onnxruntime",
                      "onnxruntime", "label-studio-sdk", "diffusers")


class ExportError(ValueError):
    """The run directory cannot be exported; the message says what is missing."""


@dataclass
class ExportResult:
    out: Path
    skipped_run: bool  # True when an up-to-date export was already there
    counts: dict[str, int] = field(default_factory=dict)


# --- reading the run --------------------------------------------------------------------------


def _parquet_files(directory: Path) -> list[Path]:
    # Hidden names are temp files of a writer still at work (runio.tmp_path): never read them.
    return sorted(
        p for p in directory.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def _read_tables(files: list[Path]) -> pa.Table | None:
    if not files:
        return None
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def load_curated(run: Path, stage: str) -> tuple[pa.Table, dict[str, Any]]:
    """The kept rows of `stage` (key + decision columns) and how many were read and kept."""
    if stage not in STAGE_DIRS:
        raise ExportError(f"--from must be one of {', '.join(STAGE_DIRS)}, not {stage!r}")
    directory = run / STAGE_DIRS[stage]
    if directory.exists() and not is_complete(directory):
        raise ExportError(f"{directory} is unfinished (no {SUCCESS} marker): let its stage "
                          "finish or rerun it before exporting")
    if stage == "candidates":
        table = _read_tables(_parquet_files(directory))
        if table is None:
            raise ExportError(f"no candidates in {directory}: run `photogenic select` first")
        decisions = table.select(["key"])
        return _dedup(decisions), {"read": table.num_rows, "kept": table.num_rows}
    path = directory / "decisions.parquet"
    if not path.exists():
        raise ExportError(
            f"{path} not found: run `photogenic review pull --pass {stage[-1]}` first "
            f"(or export --from candidates)"
        )
    table = pq.read_table(path)
    missing = {"key", "keep"} - set(table.column_names)
    if missing:
        raise ExportError(f"{path} lacks column(s) {sorted(missing)}")
    keep = table.column("keep").fill_null(False)
    kept = table.filter(keep)
    return _dedup(kept), {"read": table.num_rows, "kept": kept.num_rows}


def _dedup(table: pa.Table) -> pa.Table:
    # One decision per key is the contract; if a pull ever repeats one, keep its first row.
    seen: set[str] = set()
    rows = []
    for i, key in enumerate(table.column("key").to_pylist()):
        if key is not None and key not in seen:
            seen.add(key)
            rows.append(i)
    return table.take(pa.array(rows, pa.int64())) if len(rows) != table.num_rows else table


def load_score_rows(run: Path, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Score rows for `keys`: from candidates, falling back to the full scores table."""
    import duckdb

    wanted = pa.table({"key": pa.array(keys, pa.string())})
    found: dict[str, dict[str, Any]] = {}
    con = duckdb.connect()
    con.register("wanted", wanted)
    for sub in ("candidates", "scores"):
        files = _parquet_files(run / sub)
        if not files:
            continue
        listing = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
        rows = con.sql(
            f"SELECT t.* FROM read_parquet({listing}, union_by_name=true) t "
            "JOIN wanted w USING (key)"
        ).to_arrow_table()
        for row in rows.to_pylist():
            found.setdefault(row["key"], row)
        con.unregister("wanted")
        wanted = pa.table({"key": pa.array([k for k in keys if k not in found], pa.string())})
        con.register("wanted", wanted)
    return found


# --- naming and splitting ---------------------------------------------------------------------


def safe_name(key: str) -> str:
    """A file and webdataset-safe name for a key (webdataset splits a name at its first dot)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,100}", key):
        return key
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", key)[:80]
    return f"{stem}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def split_of(key: str, validation_fraction: float, salt: str = "") -> str:
    """Deterministic split from a hash of the key: a key never changes split between exports."""
    digest = hashlib.sha256(f"{salt}{key}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"


def assign_splits(keys: list[str], validation_fraction: float, salt: str = "") -> dict[str, str]:
    splits = {k: split_of(k, validation_fraction, salt) for k in keys}
    # Early stopping needs at least one held-out image; on tiny sets the hash may give none.
    if validation_fraction > 0 and len(keys) >= 2 and "validation" not in splits.values():
        lowest = min(keys, key=lambda k: hashlib.sha256(f"{salt}{k}".encode()).digest())
        splits[lowest] = "validation"
    return splits


def image_extension(data: bytes, declared_format: str | None) -> str:
    if declared_format and declared_format.upper() in FORMAT_EXTS:
        return FORMAT_EXTS[declared_format.upper()]
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return FORMAT_EXTS.get((im.format or "").upper(), (im.format or "bin").lower())
    except Exception:  # not an image we know: keep the bytes, name them honestly
        return "bin"


# --- building ---------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _sample_record(key: str, score: dict[str, Any], decision: dict[str, Any], stage: str,
                   split: str) -> dict[str, Any]:
    record = {k: v for k, v in score.items()}
    record["key"] = key
    record["decision"] = {k: v for k, v in decision.items() if k != "key"}
    record["export"] = {"from": stage, "split": split}
    return record


def caption_for(score: dict[str, Any], decision: dict[str, Any]) -> str:
    # A reviewer's rewritten caption (Emu's captions were hand-written) wins over the pool's.
    for source in (decision, score):
        text = source.get("caption")
        if isinstance(text, str) and text.strip():
            return text.strip()
    return ""


class SampleWriter:
    """Streams samples into the webdataset shards, the imagefolder and the manifest rows.

    One image is held in memory at a time (a curated set of 2K full-size photos would not fit).
    """

    def __init__(self, root: Path, config):
        self.root, self.config = root, config
        self.shards: dict[str, Any] = {}  # split -> webdataset.ShardWriter, opened on first use
        self.metadata: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.manifest: list[dict[str, Any]] = []

    def _shard_writer(self, split: str):
        import webdataset as wds

        if split not in self.shards:
            folder = self.root / "webdataset"
            folder.mkdir(parents=True, exist_ok=True)
            self.shards[split] = wds.ShardWriter(
                str(folder / f"{split}-%05d.tar"), maxcount=self.config.shard_size, verbose=0,
                encoder=False, mtime=TAR_MTIME)
        return self.shards[split]

    def add(self, key: str, data: bytes, score: dict[str, Any], decision: dict[str, Any],
            stage: str, split: str) -> None:
        name, ext = safe_name(key), image_extension(data, score.get("format"))
        text = caption_for(score, decision)
        record = _sample_record(key, score, decision, stage, split)
        sink = self._shard_writer(split)
        sink.write({
            "__key__": name,
            ext: data,
            "txt": text.encode(),
            "json": json.dumps(record, sort_keys=True, default=_json_default).encode(),
        })
        file_name = f"{name}.{ext}"
        if self.config.imagefolder:
            folder = self.root / "imagefolder" / split
            folder.mkdir(parents=True, exist_ok=True)
            (folder / file_name).write_bytes(data)
            self.metadata[split].append(json.dumps(
                {"file_name": file_name, "text": text, "key": key}, ensure_ascii=False))
        self.manifest.append(self._manifest_row(record, text, split, file_name, name,
                                                Path(sink.fname).name, data))

    @staticmethod
    def _manifest_row(record, text, split, file_name, name, shard, data) -> dict[str, Any]:
        row = {k: v for k, v in record.items() if k not in ("decision", "export")}
        row.update({f"decision_{k}": v for k, v in record["decision"].items()})
        row.update({
            "split": split,
            "text": text,
            "file_name": f"imagefolder/{split}/{file_name}",
            "wds_shard": f"webdataset/{shard}",
            "wds_key": name,
            "image_sha256": hashlib.sha256(data).hexdigest(),
            "image_bytes": len(data),
        })
        # Nested decision values (lists, dicts) become JSON strings: a flat parquet schema.
        return {k: json.dumps(v, sort_keys=True, default=_json_default)
                if isinstance(v, (dict, list)) else v for k, v in row.items()}

    def close(self) -> None:
        for sink in self.shards.values():
            sink.close()
        for split, lines in self.metadata.items():
            if lines:
                (self.root / "imagefolder" / split / "metadata.jsonl").write_text(
                    "\n".join(lines) + "\n")
        # from_pylist takes its columns from the first row; rows from candidates and from
        # scores differ (candidates add engagement, dup_group, ...), so name the union.
        columns = list(dict.fromkeys(k for row in self.manifest for k in row))
        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in self.manifest])
        pq.write_table(table, self.root / "manifest.parquet")

    def split_counts(self) -> dict[str, int]:
        return {sp: sum(1 for r in self.manifest if r["split"] == sp) for sp in SPLITS}


def write_samples(run: Path, stage: str, config, root: Path) -> dict[str, Any]:
    """Export every kept key of `stage` into `root`, in key order; returns counts and skips."""
    from tqdm import tqdm

    curated, read_counts = load_curated(run, stage)
    decisions = {row["key"]: row for row in curated.to_pylist()}
    keys = sorted(decisions)
    scores = load_score_rows(run, keys)
    splits = assign_splits(keys, config.validation_fraction, config.split_salt)
    writer, skipped = SampleWriter(root, config), []
    for key in tqdm(keys, desc="export", unit="img", disable=len(keys) < 200):
        score = scores.get(key)
        if score is None:
            skipped.append({"key": key, "reason": "no score row in candidates or scores"})
            continue
        try:
            data = read_source(score["source"] or "")
        except SourceError as err:
            skipped.append({"key": key, "reason": f"unreadable source: {err}"})
            continue
        if score.get("sha256") and score["sha256"] != hashlib.sha256(data).hexdigest():
            skipped.append({"key": key, "reason": "image bytes changed since scoring (sha256)"})
            continue
        writer.add(key, data, score, decisions[key], stage, splits[key])
        failpoint("export.sample")
    if not writer.manifest:
        raise ExportError(
            f"nothing to export from {stage}: {read_counts['kept']} kept, {len(skipped)} skipped"
            + (f" (first: {skipped[0]['reason']})" if skipped else ""))
    writer.close()
    return {"stage": read_counts, "skipped": skipped, "exported": len(writer.manifest),
            "splits": writer.split_counts()}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("lineage.json", SUCCESS)
    }


# --- lineage ----------------------------------------------------------------------------------


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _row_count(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _decision_counts(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["keep"])
    keep = table.column("keep").fill_null(False).to_pylist()
    return {"decided": len(keep), "kept": sum(keep)}


def stage_counts(run: Path) -> dict[str, Any]:
    """Counts at each stage of the funnel, read from what the stages wrote."""
    counts: dict[str, Any] = {}
    score_files = _parquet_files(run / "scores")
    if score_files:
        funnel = _read_json(run / "scores" / "_funnel.json") or {}
        counts["scores"] = {"rows": _row_count(score_files),
                            "passed": funnel.get("passed"),
                            "reject_reasons": funnel.get("reject_reasons")}
    cand_files = _parquet_files(run / "candidates")
    if cand_files:
        counts["candidates"] = {"rows": _row_count(cand_files)}
    for stage in ("pass1", "pass2"):
        c = _decision_counts(run / STAGE_DIRS[stage] / "decisions.parquet")
        if c is not None:
            counts[stage] = c
    return counts


def input_fingerprint(run: Path, stage: str, export_config) -> str:
    """What the export depends on: decisions/candidates by content, scores by size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"stage": stage, "export": export_config.model_dump(mode="json")},
                        sort_keys=True).encode())
    decisions = run / STAGE_DIRS[stage] / "decisions.parquet"
    content = [decisions] if stage != "candidates" and decisions.exists() else []
    for f in content + _parquet_files(run / "candidates"):
        h.update(f"{f.relative_to(run)}:{sha256_file(f)}".encode())
    for f in _parquet_files(run / "scores"):  # can be huge: stat, not content
        st = f.stat()
        h.update(f"{f.relative_to(run)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def build_lineage(run: Path, stage: str, config, written: dict[str, Any], root: Path,
                  fingerprint: str) -> dict[str, Any]:
    funnel = _read_json(run / "scores" / "_funnel.json") or {}
    filter_config = (funnel.get("config") or {}).get("filters") or config.filters.model_dump(
        mode="json")
    return {
        "run": str(run.resolve()),
        "from": stage,
        "input_fingerprint": fingerprint,
        "config": {
            "export": config.export.model_dump(mode="json"),
            "select": config.select.model_dump(mode="json"),
            "review": config.review.model_dump(mode="json"),
        },
        "thresholds": filter_config,
        "models": _model_names(filter_config, funnel),
        "package_versions": _package_versions(),
        "counts": {**stage_counts(run), "exported": written["exported"],
                   "splits": written["splits"], "skipped": len(written["skipped"]),
                   "read_from_stage": written["stage"]},
        "skipped": written["skipped"],
        "candidates_summary": _read_json(run / "candidates" / "_summary.json"),
        "files": file_hashes(root),
    }


def _model_names(filters: dict[str, Any], funnel: dict[str, Any]) -> dict[str, Any]:
    versions = _package_versions()
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


# --- the whole export -------------------------------------------------------------------------


def _remove_stale_builds(out: Path) -> None:
    for p in out.parent.glob(f".{out.name}.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def export_run(run: str | Path, out: str | Path | None = None, stage: str = "pass2",
               config=None, force: bool = False) -> ExportResult:
    """Export the curated set of `run`; see the module docstring for the layout."""
    from photogenic.pipeline.core.config import Config

    config = config or Config()
    run = Path(run)
    if not run.is_dir():
        raise ExportError(f"run directory not found: {run}")
    out = Path(out) if out else run / "export"
    fingerprint = input_fingerprint(run, stage, config.export)
    if not force and is_complete(out):
        lineage = _read_json(out / "lineage.json") or {}
        if lineage.get("input_fingerprint") == fingerprint:
            return ExportResult(out, True, lineage.get("counts", {}))
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(out)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        written = write_samples(run, stage, config.export, tmp)
        lineage = build_lineage(run, stage, config, written, tmp, fingerprint)
        (tmp / "lineage.json").write_text(
            json.dumps(lineage, indent=2, sort_keys=True, default=_json_default) + "\n")
        (tmp / SUCCESS).write_text(json.dumps({"ok": True}) + "\n")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, False, lineage["counts"])


def verify_export(out: str | Path) -> list[str]:
    """Problems found re-hashing an export against its lineage.json (empty list: all verify)."""
    out = Path(out)
    lineage = _read_json(out / "lineage.json")
    if lineage is None:
        return [f"{out / 'lineage.json'} missing or unreadable"]
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
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory (reads review decisions, candidates, scores).")
@click.option("--from", "stage", type=click.Choice(list(STAGE_DIRS)), default="pass2",
              show_default=True, help="Which decisions define the curated set.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default RUN/export).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--force", is_flag=True, help="Rebuild even if an up-to-date export exists.")
@click.option("--verify", "verify_only", is_flag=True,
              help="Only re-hash an existing export against its lineage.json.")
def export_cmd(run_dir, stage, out_dir, config_path, force, verify_only) -> None:
    """Export the curated set: webdataset shards, parquet manifest, imagefolder, lineage."""
    from photogenic.pipeline.core.config import ConfigError, load_config

    out = Path(out_dir) if out_dir else Path(run_dir) / "export"
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
        result = export_run(run_dir, out, stage, config, force=force)
    except (ExportError, ConfigError) as err:
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
