"""Selection benchmark on a synthetic score table (written once under .cache/bench/, reused; the
smaller tables are the first rows of the largest, as hard links):

- 10^7 rows through DuckDB selection, and in the same run, just before and just after it, the
  cost of reading and grouping the same rows: three DuckDB group-bys (by concept, by sha256, by
  the high 32 bits of the pHash) in one DuckDB process with select's memory limit. The ratio is
  select's own seconds over the mean of the two baseline measurements.
- 10^8 rows through DuckDB selection: wall seconds and peak RSS of the process tree.
- Spark local and DuckDB side by side on the first 10^6 rows, for the engine ratio and the check
  that both select the same keys.

Per-step seconds are select's (plan.py's _StepTimer). Results: bench/results/select.json.
(Issue 16 calls this bench/select.py; it is named selection.py because a bench/select.py run as a
script would put bench/ first on the module search path and shadow the standard library's
`select` module, which subprocess imports.)

    .venv/bin/python -m bench.selection [--rows 10000000] [--big-rows 100000000] [--spark-rows 1000000] [--no-spark]
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

# The baseline: what reading and grouping the input costs in DuckDB alone, with select's settings.
BASELINE = """
import json, sys, time
import duckdb
files, memory_limit = json.loads(sys.argv[1]), sys.argv[2]
con = duckdb.connect(":memory:")
con.execute(f"SET memory_limit = '{memory_limit}'")
con.execute("SET preserve_insertion_order = false")
con.execute("SET enable_progress_bar = false")
paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
con.execute(f"CREATE VIEW scores AS SELECT * FROM read_parquet([{paths}])")
out = {}
for name, expr in (("concept", "concept"), ("sha256", "sha256"), ("phash_band32", "phash >> 32")):
    started = time.perf_counter()
    groups = con.execute(f"SELECT count(*) FROM (SELECT {expr} AS g, count(*) AS n FROM scores GROUP BY g) t").fetchone()[0]
    out[name] = {"seconds": round(time.perf_counter() - started, 3), "groups": groups}
out["total_s"] = round(sum(v["seconds"] for v in out.values()), 3)
print(json.dumps(out))
"""


class NoDisk(RuntimeError):
    pass


def ensure_table(rows: int) -> Path:
    """The cached scores dir of `rows` synthetic rows (chunks of 10^6; a prefix is reusable)."""
    from tests.pipeline.selection.synthetic import synthetic_scores

    scores = RunDir(CACHE / f"select-{rows}").scores
    if is_complete(scores):
        return scores
    free = shutil.disk_usage(CACHE.parent if CACHE.parent.exists() else REPO).free
    need = rows * 150  # ~100 bytes/row compressed, with headroom
    if free < need * 2:
        raise NoDisk(f"not enough disk for {rows} rows: {free / 2**30:.1f} GiB free, want {need * 2 / 2**30:.1f}")
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


def watch(args: list[str]) -> tuple[str, float, int]:
    """Runs a child process: (stdout, wall seconds, peak RSS of its process tree in bytes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
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
        raise SystemExit(f"{args[1:3]} failed:\n{err[-4000:]}")
    return out, wall, peak


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def run_baseline(scores: Path, memory_limit: str) -> dict:
    """The three group-bys over `scores` in a child DuckDB process."""
    files = [str(p) for p in committed_parquet(scores)]
    load = os.getloadavg()
    out, wall, peak = watch([sys.executable, "-c", BASELINE, json.dumps(files), memory_limit])
    return {**_last_json(out), "wall_s": round(wall, 2), "peak_rss_gib": round(peak / 2**30, 3),
            "load_avg_at_start": load}


def run_engine(scores: Path, engine: str, config: dict) -> dict:
    """One selection in a child process; wall time and peak RSS of its whole process tree."""
    run = RunDir(CACHE / "runs" / f"{scores.parent.name}-{engine}")
    shutil.rmtree(run.root, ignore_errors=True)
    run.root.mkdir(parents=True)
    run.scores.symlink_to(scores.resolve())
    load = os.getloadavg()
    out, wall, peak = watch([sys.executable, "-c", RUNNER, str(run.root), engine, json.dumps(config)])
    summary = _last_json(out)
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
        "step_cpu_s": summary.get("step_cpu_s"),
        "load_avg_at_start": load,
        "candidates": str(run.candidates),
    }


def same_keys(a: dict, b: dict) -> bool:
    import pyarrow.parquet as pq

    keys = [pq.read_table(committed_parquet(r["candidates"])[0], columns=["key"]).column("key") for r in (a, b)]
    return keys[0].equals(keys[1])


def _steps(result: dict) -> str:
    cpu = result.get("step_cpu_s") or {}
    steps = sorted((result.get("step_s") or {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.1f} (cpu {cpu.get(k, 0):.1f})" for k, v in steps if v >= 0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--big-rows", type=int, default=100_000_000, help="0: skip the large table")
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
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_avg_at_start": os.getloadavg()},
        "config": cfg["select"],
        "command": " ".join(sys.argv[1:]),
    }
    big = None
    if args.big_rows:
        try:
            big = ensure_table(args.big_rows)
        except NoDisk as err:
            print(f"10^8 skipped: {err}", flush=True)
            results["big"] = {"rows": args.big_rows, "skipped": str(err)}
    scores = prefix_table(big, args.rows) if big is not None and args.rows < args.big_rows else ensure_table(args.rows)
    results["table"] = {"rows": args.rows, "path": str(scores),
                        "bytes": sum(p.stat().st_size for p in committed_parquet(scores))}

    limit = cfg["select"]["memory_limit"]
    print(f"baseline: three DuckDB group-bys over {args.rows} rows ...", flush=True)
    before = run_baseline(scores, limit)
    print(json.dumps(before), flush=True)
    print(f"DuckDB selection on {args.rows} rows ...", flush=True)
    duck = run_engine(scores, "duckdb", cfg)
    print(json.dumps(duck, indent=1), flush=True)
    after = run_baseline(scores, limit)
    print(json.dumps(after), flush=True)
    baseline_s = (before["total_s"] + after["total_s"]) / 2
    results["duckdb"] = duck
    results["baseline"] = {"before": before, "after": after, "mean_s": round(baseline_s, 3)}
    results["ratio_to_groupby_baseline"] = round(duck["select_s"] / baseline_s, 2)

    if big is not None:
        print(f"DuckDB selection on {args.big_rows} rows ...", flush=True)
        results["big"] = {**run_engine(big, "duckdb", cfg),
                          "table_bytes": sum(p.stat().st_size for p in committed_parquet(big))}
        print(json.dumps(results["big"], indent=1), flush=True)

    if not args.no_spark:
        small = prefix_table(big if big is not None else scores, args.spark_rows)
        print(f"DuckDB and Spark local on {args.spark_rows} rows ...", flush=True)
        duck_small = run_engine(small, "duckdb", cfg)
        spark = run_engine(small, "spark", cfg)
        results["ratio"] = {
            "rows": args.spark_rows,
            "duckdb": duck_small,
            "spark_local": spark,
            "spark_over_duckdb_wall": round(spark["wall_s"] / duck_small["wall_s"], 2),
            "same_keys": same_keys(duck_small, spark),
        }
        print(json.dumps(results["ratio"], indent=1), flush=True)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print("\n== selection benchmark ==")
    print(f"load average at start {results['machine']['load_avg_at_start']}, at end {results['machine']['load_avg_at_end']}")
    print(f"{args.rows} rows: select {duck['select_s']:.1f} s (wall {duck['wall_s']:.1f} s), peak RSS {duck['peak_rss_gib']:.2f} GiB")
    print(f"  three group-bys (concept, sha256, pHash >> 32): {before['total_s']:.1f} s before, {after['total_s']:.1f} s after")
    print(f"  ratio select / group-bys: {results['ratio_to_groupby_baseline']:.2f}")
    print(f"  steps (s): {_steps(duck)}")
    if big is not None:
        b = results["big"]
        print(f"{args.big_rows} rows: select {b['select_s']:.1f} s (wall {b['wall_s']:.1f} s), peak RSS {b['peak_rss_gib']:.2f} GiB")
        print(f"  steps (s): {_steps(b)}")
    if "ratio" in results:
        r = results["ratio"]
        print(f"{r['rows']} rows: Spark local {r['spark_local']['wall_s']:.1f} s, DuckDB {r['duckdb']['wall_s']:.1f} s,"
              f" same keys: {r['same_keys']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
