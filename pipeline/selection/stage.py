"""`photogenic select`: dedup, engagement ranking and concept-balanced sampling of passed rows.

RUN/scores/*.parquet  ->  RUN/candidates/part-00000.parquet, _summary.json, _dropped/, _SUCCESS

The steps are in plan.py, their SQL in sql.py, run by one of engines/; this module picks the
engine, validates the input and publishes the candidates folder.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import click
import pyarrow.parquet as pq

from photogenic.pipeline.core.config import Config, ConfigError, SelectConfig, load_config
from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import (
    SUCCESS, build_name, committed_parquet, is_complete, mark_success, publishing,
    part_identity, remove_stale_builds,
)
from photogenic.pipeline.core.storage import arrow_args, configure as configure_storage, is_remote
from photogenic.pipeline.core.schema import SCORE_SCHEMA
from photogenic.pipeline.core.summary import StageSummary, fingerprint, read_details, read_summary, write_summary
from photogenic.pipeline.selection import head as select_head
from photogenic.pipeline.selection.engines.base import Engine
from photogenic.pipeline.selection.plan import SelectError, dropped_by_reason, execute_plan

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "spark")


def _score_files(run: RunDir) -> list[Path]:
    scores = run.scores
    if not scores.exists():
        raise SelectError(f"{scores} does not exist: run `photogenic filter` first")
    if not is_complete(scores):
        raise SelectError(f"{scores} has no {SUCCESS}: the filter job has not finished (rerun it)")
    files = committed_parquet(scores)
    if not files:
        raise SelectError(f"{scores} holds no parquet files")
    path, fs = arrow_args(files[0])
    missing = [n for n in SCORE_SCHEMA.names if n not in pq.read_schema(path, filesystem=fs).names]
    if missing:
        raise SelectError(f"{files[0]} lacks score columns {missing}")
    return files


def _input_fingerprint(run: RunDir, files: list[Path]) -> str:
    # Names relative to the run (less the attempt id a part was written under) and sizes: the
    # same scores copied to another run, or scored again, match.
    return fingerprint([(part_identity(p.relative_to(run.root).as_posix()), p.stat().st_size) for p in files])


def _open_engine(name: str, files: list[Path], config: Config, scratch: Path,
                 master: str | None, conf: dict[str, str] | None) -> Engine:
    if name == "duckdb":
        from photogenic.pipeline.selection.engines.duckdb import DuckDBEngine

        return DuckDBEngine(files, config.select, scratch)
    from photogenic.pipeline.selection.engines.spark import SparkEngine

    return SparkEngine(files, config, master, conf)


def _stage_summary(cfg: SelectConfig, details: dict[str, Any], input_fingerprint: str) -> StageSummary:
    # Timings stay out of _summary.json (seconds: null) so that a rerun writes identical files.
    # The config is the one that ran: command-line target, seed and engine included.
    cfg = cfg.model_copy(update={k: details[k] for k in ("target", "seed", "engine")})
    return StageSummary(
        stage="select", input_fingerprint=input_fingerprint,
        rows_in=details["input"]["rows"], rows_out=details["selected"],
        by_reason=dropped_by_reason(cfg, details), seconds=None,
        config=cfg.model_dump(mode="json"), details=details,
    )


def _scratch_dir(cfg: SelectConfig, run: RunDir) -> Path:
    """DuckDB's spill folder: local disk always (a run on a store spills to the temp dir)."""
    if cfg.temp_directory:
        return Path(cfg.temp_directory)
    if is_remote(run.root):
        import tempfile

        return Path(tempfile.mkdtemp(prefix="photogenic-select-"))
    return build_name(run.select_scratch)


def run_select(
    run_dir: str | Path,
    config: Config | None = None,
    engine: str | None = None,
    target: int | None = None,
    seed: int | None = None,
    master: str | None = None,
    conf: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Selects candidates from RUN/scores into RUN/candidates; returns select's summary (the
    `details` of candidates/_summary.json) with the wall time and seconds per step."""
    config = config or Config()
    configure_storage(config.storage.options)
    cfg = config.select
    run = RunDir.of(run_dir)
    engine = engine or cfg.engine
    target = cfg.target if target is None else int(target)
    seed = cfg.seed if seed is None else int(seed)
    if engine not in ENGINES:
        raise SelectError(f"unknown engine {engine!r}: use duckdb or spark")
    if target < 0:
        raise SelectError(f"target must be >= 0, got {target}")
    files = _score_files(run)
    head_file = select_head.resolve(run, config)
    input_fingerprint = _input_fingerprint(run, files)
    if head_file is not None:  # a new head is new input
        input_fingerprint = fingerprint([input_fingerprint, select_head.signature(head_file)])
    if is_complete(run.candidates) and not force:
        # Up to date unless the scores grew or were re-scored since (an incremental run).
        done = read_summary(run.candidates)
        if done is None or done.input_fingerprint == input_fingerprint:
            log.info("%s is complete; skipping (use --force to redo)", run.candidates)
            return {"skipped": True, **read_details(run.candidates)}
        log.info("%s was selected from other scores; selecting again", run.candidates)
    remove_stale_builds(run.candidates)
    remove_stale_builds(run.select_scratch)
    started = time.perf_counter()
    scratch = _scratch_dir(cfg, run)
    with publishing(run.candidates) as tmp:
        runner = _open_engine(engine, files, config, scratch, master, conf)
        try:
            head = select_head.scores_table(head_file, run) if head_file is not None else None
            details, step_seconds = execute_plan(runner, cfg, target, seed, tmp, head)
        finally:
            runner.close()
            if not cfg.temp_directory:
                shutil.rmtree(scratch, ignore_errors=True)
        details["engine"] = engine
        details["head"] = ({"file": str(head_file), "weight": cfg.head_weight, "scored_keys": head.num_rows}
                           if head is not None else None)
        write_summary(tmp, _stage_summary(cfg, details, input_fingerprint))
        mark_success(tmp)
        failpoint("select.before_publish")
    return {**details, "wall_s": round(time.perf_counter() - started, 3), "step_s": step_seconds["wall"],
            "step_cpu_s": step_seconds["cpu"]}


@click.command("select")
@click.option("--run", "run_dir", required=True, help="Run directory holding scores/; a path or a URL.")
@click.option("--target", type=int, default=None, help="Rows to select (default: select.target).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default=None, help="Default: select.engine.")
@click.option("--seed", type=int, default=None, help="Seed of the hashed tie-breaks and sampling.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@click.option("--master", default=None, help="Spark master (spark engine only).")
@click.option("--conf", "conf_pairs", multiple=True, help="Spark conf key=value (repeatable).")
@click.option("--force", is_flag=True, help="Redo even when candidates/_SUCCESS exists.")
def select_cmd(run_dir, target, engine, seed, config_path, master, conf_pairs, force) -> None:
    """Dedup, rank by engagement and concept-balance RUN/scores into RUN/candidates."""
    from photogenic.pipeline.core.spark import parse_conf

    try:
        config = load_config(config_path)
        summary = run_select(
            run_dir, config, engine=engine, target=target, seed=seed,
            master=master, conf=parse_conf(conf_pairs), force=force,
        )
    except (ConfigError, SelectError, ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None
    if summary.get("skipped"):
        click.echo(f"{RunDir.of(run_dir).candidates} is complete (selected {summary.get('selected')}); --force to redo")
        return
    dups = summary["duplicates_removed"]
    click.echo(
        f"selected {summary['selected']} of {summary['input']['passed']} passed rows "
        f"({dups['exact']} exact + {dups['near']} near duplicates removed) with {summary['engine']} "
        f"in {summary['wall_s']:.1f}s -> {RunDir.of(run_dir).candidates}"
    )
    for concept, row in summary["concepts"].items():
        click.echo(f"  {concept:<20} {row['passed']:>10} -> {row['selected']:>8}  cut-off {row['engagement_cutoff']}")
