"""The performance figures of issue 16, read back from the results the benchmarks just wrote.

    python -m bench.summary [--markdown]

`make bench` runs it last: it prints each figure beside its target and the load average of the
run it comes from (a shared machine inflates timings; ratios are measured side by side). With
--markdown it prints the table README and docs/benchmarks.md carry.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _load_of(values) -> str:
    return f"{values[0]:.2f}" if values else "?"


def rows() -> list[tuple[str, str, str, bool | None, str]]:
    """(figure, measured, target, met, load average at its run's start)."""
    select, filters = _load("select"), _load("filters")
    out = []
    sel_load = _load_of(select.get("machine", {}).get("load_avg_at_start"))
    if "ratio_to_groupby_baseline" in select:
        r = select["ratio_to_groupby_baseline"]
        out.append(("selection 10^7 rows / three DuckDB group-bys", f"{r:.2f}", "<= 10", r <= 10, sel_load))
    big = select.get("big") or {}
    if big:
        big_load = _load_of(big.get("load_avg_at_start"))
        out.append(("selection 10^8 rows, seconds", f"{big['select_s']:.1f}", "<= 300", big["select_s"] <= 300, big_load))
        out.append(("selection 10^8 rows, peak GiB", f"{big['peak_rss_gib']:.2f}", "<= 8", big["peak_rss_gib"] <= 8, big_load))
    f_load = _load_of(filters.get("machine", {}).get("load_average_at_start"))
    for key, label in (("webpool_quality_tuning", "quality-tuning config"), ("webpool", "default config")):
        ratios = (filters.get(key) or {}).get("ratios")
        if not ratios:
            continue
        r = ratios["static_over_score_all_model_time"]
        target = key == "webpool_quality_tuning"
        out.append((f"cascade / score-all model time, web-like pool, {label}", f"{r:.3f}",
                    "<= 0.4" if target else "(reported)", r <= 0.4 if target else None, f_load))
        a = ratios["adaptive_over_static_model_time"]
        out.append((f"adaptive / static model time, web-like pool, {label}", f"{a:.3f}", "<= 1.0", a <= 1.0, f_load))
    spark = filters.get("webpool_spark") or {}
    if spark:
        cold, warm = spark["spark_over_loop_rows_per_s_cold"], spark["spark_over_loop_rows_per_s_warm"]
        out.append(("Spark local[2] / plain loop rows/s, 5,000 rows, first run", f"{cold:.3f}", ">= 0.9", cold >= 0.9, f_load))
        out.append(("Spark local[2] / plain loop rows/s, 5,000 rows, workers warm", f"{warm:.3f}", ">= 0.9", warm >= 0.9, f_load))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    table = rows()
    if args.markdown:
        print("| figure | measured | target | load average at start |")
        print("| --- | ---: | ---: | ---: |")
        for name, value, target, _, load in table:
            print(f"| {name} | {value} | {target} | {load} |")
        return
    print("issue-16 figures (bench/results/*.json):")
    for name, value, target, met, load in table:
        mark = "" if met is None else ("met" if met else "MISSED")
        print(f"  {name:66s} {value:>8s}  target {target:10s} {mark:6s} (load {load})")


if __name__ == "__main__":
    main()
