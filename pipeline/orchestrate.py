"""`photogenic run`: every stage that has new input, once, for cron or an Airflow task.

filter (only shards not scored yet) -> select (again when the scores changed) -> for each review
pass: push (only keys the project lacks) and pull (what annotators have done so far) -> export
(again when the last pass's decisions changed) -> report.

Each stage is already idempotent and resumable; this module adds what a scheduler needs around
them: a lock against two runs on the same run directory, exit codes, and a machine-readable
summary of what each stage did (RUN/_runs/<started>.json, the newest also as RUN/_runs/last.json
and on stdout with --json).
Review decisions live in the Label Studio project (pull reads every key of it), so a selection
made again over grown scores never loses one, and push never imports a key twice.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from photogenic.pipeline.core.config import Config
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import write_json_atomic
from photogenic.pipeline.core.storage import cache_root, is_remote, location

STAGES = ("filter", "select", "review", "export", "report")
RUNS_DIR = "_runs"
LOCK_NAME = ".photogenic-run.lock"

# Exit codes: sysexits' EX_TEMPFAIL for "another run holds the lock" (a scheduler retries it).
EXIT_OK, EXIT_FAILED, EXIT_LOCKED = 0, 1, 75


class RunLocked(RuntimeError):
    """Another `photogenic run` holds the run directory's lock."""


@dataclass
class RunSummary:
    pool: str
    run: str
    started: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "running"
    exit_code: int | None = None
    error: str | None = None
    seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def lock_path(run: RunDir) -> Path:
    """A local run locks a file in its own folder; a run on a store locks one under the local
    cache, keyed by its URL (that guards one host: schedule a remote run from one place)."""
    if is_remote(run.root):
        digest = hashlib.sha1(location(run.root).encode()).hexdigest()[:16]
        return cache_root() / "locks" / f"run-{digest}.lock"
    return Path(run.root) / LOCK_NAME


@contextmanager
def run_lock(run: RunDir) -> Iterator[Path]:
    """Hold an exclusive, non-blocking flock for the run (released by the kernel if we die)."""
    path = lock_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(f"another `photogenic run` holds {path} ({holder}); try again later") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": _now()}).encode(), 0)
        yield path
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_stages(text: str | None) -> tuple[str, ...]:
    if not text:
        return STAGES
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in wanted)


# --- stages ----------------------------------------------------------------------------------


def filter_stage(pool: str, run: RunDir, config: Config, opts: dict[str, Any]) -> dict[str, Any]:
    from photogenic.pipeline.filtering.job import run_filter

    funnel = run_filter(pool, run.root, config, master=opts.get("master"), conf=opts.get("conf"),
                        save_embeddings=opts.get("save_embeddings", True))
    new = funnel["shards_run_this_time"]
    return {"ran": new > 0, "shards": funnel.get("shards"), "shards_scored": new,
            "rows": funnel["rows_in"], "passed": funnel["passed"],
            "seconds": funnel["wall_seconds_this_run"]}


def select_stage(pool: str, run: RunDir, config: Config, opts: dict[str, Any]) -> dict[str, Any]:
    from photogenic.pipeline.selection.stage import run_select

    details = run_select(run.root, config, master=opts.get("master"), conf=opts.get("conf"))
    return {"ran": not details.get("skipped"), "selected": details.get("selected"),
            "passed": (details.get("input") or {}).get("passed")}


def review_stage(pool: str, run: RunDir, config: Config, opts: dict[str, Any]) -> dict[str, Any]:
    from photogenic.annotation.lsclient import open_client
    from photogenic.annotation.pull import pull
    from photogenic.annotation.push import push

    client = open_client(config.review, opts.get("url"))  # starts the local server when none is configured
    passes: dict[str, Any] = {}
    for p in config.review.passes:
        pushed = push(run.root, p.name, client, config.review, echo=opts["echo"])
        quality = pull(run.root, p.name, client, config.review)
        passes[p.name] = {"pushed": pushed.n_imported, "in_project": pushed.n_in_project,
                          "unreadable": pushed.n_unreadable, "annotations": quality["n_annotations"],
                          "fetched": quality["pull"]["tasks_fetched"], "kept": quality["kept"],
                          "head": quality.get("head")}
    ran = any(v["pushed"] or v["fetched"] for v in passes.values())
    return {"ran": ran, "url": client.url, "passes": passes}


def export_stage(pool: str, run: RunDir, config: Config, opts: dict[str, Any]) -> dict[str, Any]:
    from photogenic.pipeline.export.stage import ExportError, export_run

    try:
        result = export_run(run.root, config=config)
    except ExportError as err:
        if "nothing to export" not in str(err):
            raise
        return {"ran": False, "reason": str(err)}  # no keeps yet: not a failure of the run
    return {"ran": not result.skipped_run, "counts": result.counts, "out": location(result.out)}


def report_stage(pool: str, run: RunDir, config: Config, opts: dict[str, Any]) -> dict[str, Any]:
    from photogenic.pipeline.report.stage import build_report

    return {"ran": True, "index": location(build_report(run.root))}


STAGE_FUNCTIONS: dict[str, Callable[[str, RunDir, Config, dict[str, Any]], dict[str, Any]]] = {
    "filter": filter_stage, "select": select_stage, "review": review_stage,
    "export": export_stage, "report": report_stage,
}


# --- the run ---------------------------------------------------------------------------------


def run_pipeline(pool: str, run_dir: str | Path, config: Config, stages: tuple[str, ...] = STAGES,
                 echo: Callable[[str], None] = print, **opts: Any) -> RunSummary:
    """Run `stages` in order under the run's lock; stops at the first failing stage. The summary
    is written whatever happens (except when the lock is held: RunLocked)."""
    run = RunDir.of(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(pool=location(pool), run=location(run.root), started=_now())
    t0 = time.monotonic()
    opts["echo"] = echo
    with run_lock(run):
        try:
            for stage in stages:
                echo(f"== {stage}")
                t = time.monotonic()
                result = STAGE_FUNCTIONS[stage](pool, run, config, opts)
                result["wall_s"] = round(time.monotonic() - t, 3)
                summary.stages[stage] = result
                echo(f"   {describe(stage, result)}")
            summary.status, summary.exit_code = "ok", EXIT_OK
        except Exception as err:  # recorded for the scheduler, then re-raised as a clear error by the CLI
            summary.status, summary.exit_code = "failed", EXIT_FAILED
            summary.error = f"{stage}: {type(err).__name__}: {err}"
            summary.stages[stage] = {"ran": False, "error": summary.error,
                                     "traceback": traceback.format_exc(limit=8)}
        finally:
            summary.seconds = round(time.monotonic() - t0, 3)
            write_run_summary(run, summary)
    return summary


def write_run_summary(run: RunDir, summary: RunSummary) -> Path:
    folder = run.root / RUNS_DIR
    stamp = summary.started.replace(":", "").replace("+0000", "Z")
    path = folder / f"{stamp}-{os.getpid()}.json"
    write_json_atomic(summary.as_dict(), path)
    write_json_atomic(summary.as_dict(), folder / "last.json")
    return path


def describe(stage: str, r: dict[str, Any]) -> str:
    if stage == "filter":
        return f"{r['shards_scored']} new shard(s) scored; {r['passed']:,} of {r['rows']:,} rows pass"
    if stage == "select":
        return f"{'selected again' if r['ran'] else 'unchanged'}: {r['selected']} candidates"
    if stage == "review":
        return "; ".join(f"{name}: {v['pushed']} pushed, {v['fetched']} task(s) pulled, {v['kept']} kept"
                         for name, v in r["passes"].items())
    if stage == "export":
        return r.get("reason") or f"{'exported' if r['ran'] else 'up to date'}: {r['counts']}"
    return r.get("index", "")


# --- command ---------------------------------------------------------------------------------

@click.command("run")
@click.option("--pool", required=True, help="Pool: tar shards, parquet, or image folder; a path or a URL.")
@click.option("--run", "run_dir", required=True, help="Run directory; a path or a URL.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--stages", help=f"Comma-separated subset of {','.join(STAGES)} (default: all).")
@click.option("--url", help="Label Studio URL (default: [review] url, else the local server, started when down).")
@click.option("--master", help="Spark master (default from config).")
@click.option("--conf", multiple=True, help="Spark config key=value (repeatable).")
@click.option("--no-embeddings", is_flag=True, help="Do not save CLIP embeddings (the learned head needs them).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
def run_cmd(pool, run_dir, config_path, stages, url, master, conf, no_embeddings, as_json) -> None:
    """Run every stage that has new input, idempotently (cron / Airflow): exit 0 done,
    1 a stage failed, 75 another run holds the lock. Summary in RUN/_runs/last.json."""
    from photogenic.pipeline.commands import load_or_exit
    from photogenic.pipeline.core.spark import parse_conf

    config = load_or_exit(config_path)
    try:
        wanted = parse_stages(stages)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--stages'") from None
    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        summary = run_pipeline(pool, run_dir, config, wanted, echo=say, url=url, master=master,
                               conf=parse_conf(conf), save_embeddings=not no_embeddings)
    except RunLocked as err:
        click.echo(f"Error: {err}", err=True)
        raise SystemExit(EXIT_LOCKED) from None
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
    if summary.exit_code:
        click.echo(f"Error: {summary.error} (summary: {location(RunDir.of(run_dir).root / RUNS_DIR / 'last.json')})",
                   err=True)
        raise SystemExit(summary.exit_code)
    say(f"done in {summary.seconds:.1f}s; summary: {location(RunDir.of(run_dir).root / RUNS_DIR / 'last.json')}")
