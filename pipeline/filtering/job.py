"""The filter job: every pool shard through the cascade, on Spark, one score row per sample.

Spark distributes shards (one task per shard, like img2dataset); inside a task the shard is
streamed as Arrow batches through the cascade into `scores/part-SHARD.attempt-ID.parquet`, a name
no other attempt uses, and committed by its marker `scores/_stats/SHARD.json` (the shard's counts
and the part's name) written after it, the pattern of img2dataset's `_stats.json`. A shard with a
marker is done: a rerun after a crash redoes only the others, and readers take the parts the
markers name (runio.committed_parquet), so a late or duplicate attempt (speculation, a retried
task, a worker that comes back) never adds a row. No rename is needed, so the same protocol
holds on local disk and on object stores.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.pipeline.core.config import Config, dump_config, parse_config, with_plugins
from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.pool.readers import ShardSpec, discover_shards, read_shard
from photogenic.pipeline.core.runio import (
    write_file_atomic,
    clear_success,
    committed_part_names,
    mark_success,
    read_json,
    remove_stale_tmp,
    write_parquet_atomic,
    write_json_atomic,
)
from photogenic.pipeline.core import storage
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.summary import StageSummary, write_summary
from photogenic.pipeline.core.schema import reject_reasons

SUMMARY_SCHEMA = pa.schema([("shard", pa.string()), ("stats", pa.string())])
_WORKER_CASCADES: dict[str, Any] = {}  # per worker process: models load once, tasks reuse them


class JobConfigMismatch(RuntimeError):
    pass


class FilterJobFailed(RuntimeError):
    """The Spark job stopped (a task failed past its retries); committed shards stay committed."""


def worker_error(err: BaseException) -> str:
    """The Python error a task raised, out of Spark's wrapped Java traceback (its last
    `SomeError: message` line), or the exception's first line."""
    lines = str(err).splitlines()
    found = [ln.strip() for ln in lines if re.match(r"^\s*[\w.]+(Error|Exception|Exit): ", ln)
             and not ln.strip().startswith(("org.apache", "py4j", "java."))]
    return found[-1] if found else (lines[0] if lines else type(err).__name__)


def part_path(scores_dir: Path, shard_id: str, attempt: str) -> Path:
    return scores_dir / f"part-{shard_id}.attempt-{attempt}.parquet"


def stats_path(scores_dir: Path, shard_id: str) -> Path:
    return scores_dir / "_stats" / f"{shard_id}.json"


def job_fingerprint(config: Config, score_all: bool) -> str:
    # Only what changes scores: thresholds re-applied later don't need a new run, but mixing
    # shards scored under different filters would silently corrupt the table.
    relevant: dict[str, Any] = {"filters": config.filters.model_dump(mode="json"), "score_all": score_all}
    if config.registry.plugins:  # which code scores matters too (no key without plugins: old runs resume)
        relevant["plugins"] = list(config.registry.plugins)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def worker_cascade(config_json: str, score_all: bool, save_embeddings: bool = False):
    from photogenic.pipeline.filtering.cascade import Cascade

    key = f"{score_all}:{save_embeddings}:{config_json}"
    if key not in _WORKER_CASCADES:
        threads = int(os.environ.get("PHOTOGENIC_WORKER_THREADS", "0") or 0)
        if threads:
            import torch

            torch.set_num_threads(threads)
        # parse_config, not Config: the worker resolves (imports) the same plugins as the driver.
        cascade = Cascade(parse_config(json.loads(config_json), "from the driver"), score_all=score_all,
                          save_embeddings=save_embeddings)
        cascade.setup()
        _WORKER_CASCADES[key] = cascade
    return _WORKER_CASCADES[key]


def process_shard(spec: ShardSpec, cascade, scores_dir: Path, batch_rows: int) -> dict[str, Any]:
    """Score one shard into a part of its own and commit it; returns the shard's counts."""
    marker = stats_path(scores_dir, spec.id)
    done = read_json(marker)
    if done is not None:  # another attempt committed this shard already: add nothing
        return done
    attempt = uuid.uuid4().hex[:12]
    part = part_path(scores_dir, spec.id, attempt)
    counts: Counter = Counter()
    cascade.embedding_batches.clear()  # leftovers of a shard that failed in this worker
    timings_before, orders_before = dict(cascade.timings), cascade.orders.copy()
    start = time.perf_counter()
    rows = 0

    def write(fh) -> None:
        nonlocal rows
        with pq.ParquetWriter(fh, cascade.schema) as writer:
            for batch in read_shard(spec, batch_rows=batch_rows, max_bytes=cascade.max_bytes):
                scored = cascade.process(batch)
                writer.write_batch(scored)
                rows += scored.num_rows
                for reason in scored.column("reject_reason").to_pylist():
                    counts[reason or "passed"] += 1

    write_file_atomic(part, write)
    stats = {
        "shard": spec.id,
        "part": part.name,
        "rows": rows,
        "counts": dict(counts),
        "seconds": time.perf_counter() - start,
        "stage_seconds": {k: v - timings_before.get(k, 0.0) for k, v in cascade.timings.items()},
        "meaningless": cascade.meaningless,
        "skipped_filters": cascade.skipped,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "executor": os.environ.get("SPARK_LOCAL_IP") or "",
    }
    if cascade.adaptive:  # the orders this shard's batches ran in: they decided its reject reasons
        stats["orders"] = dict(cascade.orders - orders_before)
    if cascade.save_embeddings:
        if cascade.embedding_batches:
            name = f"part-{spec.id}.attempt-{attempt}.parquet"
            write_embeddings(cascade.embedding_batches, embeddings_dir(scores_dir) / name)
            stats["embeddings"] = name
        cascade.embedding_batches.clear()
    failpoint("filter.before_commit")
    write_json_atomic(stats, marker)  # the commit point: the shard is done once its marker exists
    return stats


def embeddings_dir(scores_dir: Path) -> Path:
    return scores_dir.parent / "embeddings"


def _partition_fn(config_json: str, score_all: bool, scores_dir: str, batch_rows: int, save_embeddings: bool,
                  storage_options: dict[str, dict[str, Any]]):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        storage.configure(storage_options)  # workers reach the store as the driver does
        cascade = worker_cascade(config_json, score_all, save_embeddings)
        for batch in batches:
            for spec_json in batch.column("spec").to_pylist():
                spec = ShardSpec.from_json(spec_json)
                stats = process_shard(spec, cascade, storage.as_path(scores_dir), batch_rows)
                yield pa.RecordBatch.from_pydict(
                    {"shard": [spec.id], "stats": [json.dumps(stats)]}, schema=SUMMARY_SCHEMA
                )

    return run


def pending_shards(shards: list[ShardSpec], scores_dir: Path) -> list[ShardSpec]:
    stats_dir = scores_dir / "_stats"
    done = {p.stem for p in stats_dir.glob("*.json")} if stats_dir.is_dir() else set()
    return [s for s in shards if s.id not in done]


def _committed_count(shards: list[ShardSpec], scores_dir: Path) -> str:
    try:
        return str(len(shards) - len(pending_shards(shards, scores_dir)))
    except storage.store_errors():  # the store that failed the job may be gone still
        return "an unknown number"


def remove_uncommitted_parts(scores_dir: Path) -> int:
    """Delete parts no marker names (a killed or duplicate attempt's); only while no task runs."""
    n = 0
    for directory, names in ((scores_dir, committed_part_names(scores_dir / "_stats")),
                             (embeddings_dir(scores_dir), _committed_embeddings(scores_dir))):
        if not directory.is_dir():
            continue
        keep = set(names)
        for p in directory.glob("part-*.parquet"):
            if p.name not in keep:
                p.unlink()
                n += 1
    return n


def _committed_embeddings(scores_dir: Path) -> list[str]:
    stats_dir = scores_dir / "_stats"
    out = []
    for marker in stats_dir.glob("*.json") if stats_dir.is_dir() else []:
        stats = read_json(marker) or {}
        out.append(stats.get("embeddings") or f"part-{stats.get('shard')}.parquet")
    return out


def _check_fingerprint(scores_dir: Path, fingerprint: str, pool: str) -> None:
    recorded = read_json(scores_dir / "_job.json")
    if recorded is not None:
        if recorded.get("fingerprint") != fingerprint:
            raise JobConfigMismatch(
                f"{scores_dir} holds scores made with different filter settings "
                f"({recorded.get('fingerprint')} vs {fingerprint}); use a new --out or delete it"
            )


def run_filter(
    pool: str | Path,
    out: str | Path,
    config: Config | None = None,
    master: str | None = None,
    conf: dict[str, str] | None = None,
    score_all: bool | None = None,
    progress: bool = False,
    spark=None,
    save_embeddings: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the filter job; returns the funnel summary written to `_funnel.json`."""
    config = with_plugins(config or Config())  # resolve `[job] plugins` and installed entry points
    score_all = config.job.score_all if score_all is None else score_all
    storage.configure(config.storage.options)
    run = RunDir.of(out)
    scores_dir = run.scores
    scores_dir.mkdir(parents=True, exist_ok=True)
    shards = discover_shards(pool, config.job.folder_shard_size)
    fingerprint = job_fingerprint(config, score_all)
    _check_fingerprint(scores_dir, fingerprint, str(pool))
    remove_stale_tmp(scores_dir)
    remove_uncommitted_parts(scores_dir)
    write_json_atomic(
        {"pool": storage.location(pool), "fingerprint": fingerprint, "shards": [s.id for s in shards],
         "config": config.model_dump(mode="json"), "score_all": score_all},
        scores_dir / "_job.json",
    )
    todo = pending_shards(shards, scores_dir)
    started = time.time()
    if todo:
        clear_success(scores_dir)
        spark = spark or _spark_for(config, master, conf)
        try:
            _run_on_spark(spark, todo, config, score_all, scores_dir, len(shards), progress, save_embeddings)
        except Exception as err:
            if not type(err).__module__.startswith(("py4j", "pyspark")):
                raise
            raise FilterJobFailed(f"filter job failed ({_committed_count(shards, scores_dir)} of {len(shards)} "
                                  f"shards committed; rerun the same command to resume): {worker_error(err)}") from err
    funnel = summarise(scores_dir, shards, config)
    funnel["wall_seconds_this_run"] = round(time.time() - started, 3)
    funnel["shards_run_this_time"] = len(todo)
    write_json_atomic(funnel, run.funnel)
    write_summary(scores_dir, _stage_summary(funnel, fingerprint, config, len(shards)))
    mark_success(scores_dir)
    return funnel


def _stage_summary(funnel: dict[str, Any], fingerprint: str, config: Config, shards: int) -> StageSummary:
    # The one summary shape (core/summary.py); _funnel.json keeps the filter's own numbers.
    return StageSummary(
        stage="filter", input_fingerprint=fingerprint, rows_in=funnel["rows_in"],
        rows_out=funnel["passed"], by_reason=dict(funnel["reject_reasons"]),
        seconds=funnel["wall_seconds_this_run"], config=config.model_dump(mode="json"),
        details={"shards": shards, "skipped_filters": funnel.get("skipped_filters", {}),
                 "meaningless": funnel.get("meaningless", []),
                 **({"cascade_orders": funnel["cascade_orders"]} if funnel.get("cascade_orders") else {})})


def _spark_for(config: Config, master: str | None, conf: dict[str, str] | None):
    from photogenic.pipeline.core.spark import get_spark

    return get_spark(config, master, conf)


def _run_on_spark(spark, todo, config, score_all, scores_dir, total, progress, save_embeddings) -> None:
    sc = spark.sparkContext
    rows = [(s.to_json(),) for s in todo]
    df = spark.createDataFrame(sc.parallelize(rows, numSlices=len(rows)), "spec string")
    fn = _partition_fn(config.model_dump_json(), score_all, storage.location(scores_dir), config.job.batch_rows,
                       save_embeddings, config.storage.options)
    job = df.mapInArrow(fn, "shard string, stats string")
    if not progress:
        job.collect()
        return
    error: list[BaseException] = []
    worker = threading.Thread(target=lambda: _collect(job, error), daemon=True)
    worker.start()
    _show_progress(worker, scores_dir, total)
    if error:
        raise error[0]


def _collect(job, error: list[BaseException]) -> None:
    try:
        job.collect()
    except BaseException as err:  # re-raised in the main thread
        error.append(err)


def _show_progress(worker: threading.Thread, scores_dir: Path, total: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("filter"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
                  TextColumn("{task.fields[rows]} rows"), TimeElapsedColumn()) as bar:
        task = bar.add_task("shards", total=total, rows=0)
        while worker.is_alive():
            worker.join(1.0)
            done, rows = _progress_counts(scores_dir)
            bar.update(task, completed=done, rows=f"{rows:,}")


def _progress_counts(scores_dir: Path) -> tuple[int, int]:
    done = rows = 0
    stats_dir = scores_dir / "_stats"
    for p in stats_dir.glob("*.json") if stats_dir.is_dir() else []:
        stats = read_json(p)
        if stats and "rows" in stats:
            rows += stats["rows"]
            done += 1
    return done, rows


def summarise(scores_dir: Path, shards: list[ShardSpec], config: Config) -> dict[str, Any]:
    counts: Counter = Counter()
    stage_seconds: Counter = Counter()
    orders: Counter = Counter()
    meaningless: set[str] = set()
    skipped: dict[str, str] = {}
    rows = 0
    for s in shards:
        stats = read_json(stats_path(scores_dir, s.id), strict=True)
        rows += stats["rows"]
        counts.update(stats["counts"])
        stage_seconds.update(stats.get("stage_seconds", {}))
        orders.update(stats.get("orders", {}))
        meaningless.update(stats.get("meaningless", []))
        skipped.update(stats.get("skipped_filters", {}))
    reasons = {r: counts.get(r, 0) for r in reject_reasons(config.registry)}
    reasons.update({r: c for r, c in counts.items() if r not in reasons and r != "passed"})
    return {
        "rows_in": rows,
        "passed": counts.get("passed", 0),
        "rejected": rows - counts.get("passed", 0),
        "reject_reasons": reasons,
        "shards": len(shards),
        "stage_seconds": dict(stage_seconds),
        **({"cascade_orders": dict(orders)} if orders else {}),  # adaptive runs: batches per order
        "meaningless": sorted(meaningless),
        "skipped_filters": skipped,
        "config": config.model_dump(mode="json"),
        "config_toml": dump_config(config),
    }


def write_embeddings(batches: list[pa.RecordBatch], path: str | Path) -> Path:
    """One shard's embeddings as parquet, atomically (`RUN/embeddings/part-SHARD.parquet`)."""
    from photogenic.filters.clip import EMBEDDING_SCHEMA

    return write_parquet_atomic(pa.Table.from_batches(batches, schema=EMBEDDING_SCHEMA), path)
