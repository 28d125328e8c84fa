"""Selection benchmark: a synthetic score table of 10^7 rows (written once under .cache/bench/,
reused) through DuckDB selection, wall time and peak memory; Spark local and DuckDB side by side
on the first 10^6 rows of the same table for the engine ratio. Results: bench/results/select.json.

    .venv/bin/python -m bench.selection [--rows 10000000] [--spark-rows 1000000] [--no-spark]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from photogenic.pipeline.core.config import Config
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import committed_parquet, is_complete, mark_success, write_parquet_atomic

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
RESULTS = REPO / "bench" / "results" / "select.json"
CHUNK = 1_000_000

RUNNER = """
import json, sys
from photogenic.pipeline.core.config import Config
from photogenic.pipeline.selection.stage import run_select
cfg = Config.model_validate(json.loads(sys.argv[3]))
summary = run_select(sys.argv[1], cfg, engine=sys.argv[2], force=True)
print(json.dumps(summary))
"""


def ensure_table(rows: int) -> Path:
    """The cached scores dir of `rows` synthetic rows (chunks of 10^6; a prefix is reusable)."""
    from tests.pipeline.selection.synthetic import synthetic_scores

    scores = RunDir(CACHE / f"select-{rows}").scores
    if is_complete(scores):
        return scores
    free = shutil.disk_usage(CACHE.parent if CACHE.parent.exists() else REPO).free
    need = rows * 150  # ~100 bytes/row compressed, with headroom
    if free < need * 2:
        raise SystemExit(f"not enough disk for {rows} rows: {free / 2**30:.1f} GiB free, want {need * 2 / 2**30:.1f}")
    started = time.perf_counter()
    for start in range(0, rows, CHUNK):
        path = scores / f"part-{start // CHUNK:05d}.parquet"
        if not path.exists():
            write_parquet_atomic(synthetic_scores(min(CHUNK, rows - start), seed=7, start=start), path)
            print(f"  wrote {path.name} ({time.perf_counter() - started:.0f}s)", flush=True)
    mark_success(scores)
    return scores


def prefix_table(source: Path, rows: int) -> Path:
    """A scores dir holding the first `rows` rows of `source` (hard links to its chunks)."""
    scores = RunDir(CACHE / f"select-{rows}-of-{source.parent.name}").scores
    if not is_complete(scores):
        scores.mkdir(parents=True, exist_ok=True)
        for i in range(max(1, rows // CHUNK)):
            target = scores / f"part-{i:05d}.parquet"
            if not target.exists():
                os.link(source / f"part-{i:05d}.parquet", target)
        mark_success(scores)
    return scores


def run_engine(scores: Path, engine: str, config: dict) -> dict:
    """One selection in a child process; wall time and peak RSS of its whole process tree."""
    run = RunDir(CACHE / "runs" / f"{scores.parent.name}-{engine}")
    shutil.rmtree(run.root, ignore_errors=True)
    run.root.mkdir(parents=True)
    run.scores.symlink_to(scores.resolve())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(run.root), engine, json.dumps(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{engine} selection failed:\n{err[-4000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    rows = summary["input"]["rows"]
    return {
        "engine": engine,
        "rows": rows,
        "passed": summary["input"]["passed"],
        "selected": summary["selected"],
        "duplicates_removed": summary["duplicates_removed"],
        "verified_near_pairs": summary["near_dup_search"]["verified_pairs"],
        "wall_s": round(wall, 2),
        "select_s": summary["wall_s"],
        "rows_per_s": round(rows / wall),
        "peak_rss_gib": round(peak / 2**30, 3),
        "step_s": summary.get("step_s"),
        "candidates": str(run.candidates),
    }


def same_keys(a: dict, b: dict) -> bool:
    import pyarrow.parquet as pq

    keys = [pq.read_table(committed_parquet(r["candidates"])[0], columns=["key"]).column("key") for r in (a, b)]
    return keys[0].equals(keys[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--spark-rows", type=int, default=1_000_000)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--target", type=int, default=200_000)
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit (default: config's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    CACHE.mkdir(parents=True, exist_ok=True)
    print(subprocess.run(["df", "-h", str(CACHE)], capture_output=True, text=True).stdout)
    config = Config()
    config.select.target = args.target
    if args.memory_limit:
        config.select.memory_limit = args.memory_limit
    cfg = config.model_dump(mode="json")
    scores = ensure_table(args.rows)
    results = {
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_avg_at_start": os.getloadavg()},
        "table": {"rows": args.rows, "path": str(scores), "bytes": sum(p.stat().st_size for p in committed_parquet(scores))},
        "config": cfg["select"],
    }
    print(f"DuckDB on {args.rows} rows ...", flush=True)
    if args.memory_limit:  # an extra measurement, kept beside the default one in the same file
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        results = {**previous, f"duckdb_memory_limit_{args.memory_limit}": {
            **run_engine(scores, "duckdb", cfg), "memory_limit": args.memory_limit,
            "load_avg_at_start": os.getloadavg(), "command": " ".join(sys.argv[1:])}}
        args.no_spark = True
    else:
        results["duckdb"] = run_engine(scores, "duckdb", cfg)
        print(json.dumps(results["duckdb"], indent=1), flush=True)
    if not args.no_spark:
        small = prefix_table(scores, args.spark_rows)
        print(f"DuckDB and Spark local on {args.spark_rows} rows ...", flush=True)
        duck = run_engine(small, "duckdb", cfg)
        spark = run_engine(small, "spark", cfg)
        results["ratio"] = {
            "rows": args.spark_rows,
            "duckdb": duck,
            "spark_local": spark,
            "spark_over_duckdb_wall": round(spark["wall_s"] / duck["wall_s"], 2),
            "same_keys": same_keys(duck, spark),
        }
        print(json.dumps(results["ratio"], indent=1), flush=True)
    results["machine"].setdefault("load_avg_at_end", os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
