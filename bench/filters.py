"""Filter benchmark: what each filter costs per image, what the cascade saves, what Spark costs.

    python bench/filters.py [POOL] [--limit N] [--out bench/results/filters.json] [--sections a,b]

1. Per filter: ms/image and images/s on one core (PHOTOGENIC_WORKER_THREADS=1), on the pool's
   decodable images, each filter alone on the same decoded images (CLIP's cost is the shared
   embedding plus its dot product; aesthetic is measured with a randomly initialised LAION-format
   head, whose cost does not depend on its weights).
   Real open_clip architectures (ViT-B-32, ViT-L-14) are timed too, with random weights.
2. The cascade on the whole pool, default (a row stops at its first failure) vs `score_all`:
   seconds per input image and their ratio, in one process, side by side.
0. The technical filter: its cost per image against the legacy one at both decode sizes, its
   confusion table per kind of the pool, its catch rate per defect strength, and what clipping
   thresholds would reject of each clean kind (bench/technical.py).
3. The Spark filter job (`photogenic.pipeline.filtering.job.run_filter`, local[*]) vs the same cascade in a plain
   Python loop: rows/s and their ratio.
4. On the web-like pool (bench/webpool.py: the sample pool's photos remixed into the published shape
   of web image-text pools, ~5K rows, cached under .cache/bench/), section `webpool`: model time per
   input row (the cascade's own stage timers: header, decode, embedding and every filter) of the
   static cascade, the adaptive one (`[job] adaptive`) and `score_all`, the three interleaved batch
   by batch on the pool's first --web-mode-rows rows, with their ratios and a check that static and
   adaptive gave the same verdicts, under the default config and under a quality-tuning one (the
   default plus an aesthetic threshold: AESTHETIC_KEEP_SHARE says where its share comes from).
   Section `webpool_spark`: the filter job on Spark local[2] over the whole pool vs a plain loop
   (job.process_shard over the shards in one process: the same read, cascade, parquet write and
   commit a Spark task does) and vs that loop in 2 processes, alternated twice, rows/s and their
   ratios; cheap filters only (CHEAP_FILTERS says why).
Every number written is measured in this run; the machine's core count and load are recorded
because a shared machine inflates all of them alike.
"""
from __future__ import annotations

import sys
from pathlib import Path

import argparse
import io
import json
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault("PHOTOGENIC_WORKER_THREADS", "1")  # per-core figures
os.environ.setdefault("OMP_NUM_THREADS", "1")

from PIL import Image  # noqa: E402

from photogenic.filters.base import Sample  # noqa: E402
from photogenic.pipeline.filtering.cascade import Cascade, build_filter  # noqa: E402
from photogenic.pipeline.core.config import Config, parse_config  # noqa: E402
from photogenic.pipeline.pool.readers import discover_shards, read_shard  # noqa: E402


SECTIONS = ("technical", "per_filter", "clip_models", "cascade", "spark", "webpool", "webpool_spark")
# The filters of the Spark-vs-loop comparison on the web pool: the cheap checks. With OCR and the
# NSFW model a pass over 5K rows takes ~20 min on the shared 2-core machine; the cheap set keeps
# the per-row work small, so Spark's fixed and per-row overheads weigh more than they would with
# the models (a stricter test of the ratio, not a measurement of it with the models).
CHEAP_FILTERS = {name: {"enabled": False} for name in ("offensive", "ocr", "clip", "aesthetic", "concepts")}


def pool_rows(pool: Path) -> list[dict]:
    rows = []
    for spec in discover_shards(pool):
        for batch in read_shard(spec, batch_rows=64):
            rows += batch.to_pylist()
    return rows


def decoded_samples(rows: list[dict], size: int, limit: int) -> list[Sample]:
    out = []
    for r in rows:
        if len(out) >= limit:
            break
        try:
            img = Image.open(io.BytesIO(r["image"] or b""))
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
        except Exception:
            continue
        if min(img.size) < 64:
            continue
        img.thumbnail((size, size))
        out.append(Sample(r["key"], r["caption"], None, img.width, img.height, image=img))
    return out


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fresh(samples: list[Sample]) -> list[Sample]:
    return [Sample(s.key, s.caption, None, s.width, s.height, image=s.image) for s in samples]


def per_filter_costs(rows: list[dict], limit: int, tmp: Path) -> dict:
    import torch

    from photogenic.filters.aesthetic import build_head
    from photogenic.filters.clip import ClipEmbedder

    config = Config()
    ocr = build_filter(config, "ocr")
    samples = decoded_samples(rows, ocr.pixel_size, limit)
    n = len(samples)
    torch.manual_seed(0)
    head_path = tmp / "random-laion-head.pth"
    torch.save(build_head(768).state_dict(), head_path)

    results = {}

    def record(name: str, seconds: float, note: str = "") -> None:
        ms = 1000 * seconds / n
        results[name] = {"ms_per_image": round(ms, 3), "images_per_s_per_core": round(1000 / ms, 2) if ms else None,
                         "images": n, **({"note": note} if note else {})}
        print(f"  {name:24s} {ms:9.2f} ms/image  {1000 / ms if ms else float('inf'):9.1f} images/s/core  {note}")

    offensive = build_filter(config, "offensive")
    for f in (offensive, ocr):
        f.setup()
        f.score(fresh(samples[:2]))  # warm-up: first ONNX run allocates
        record(f.name, timed(lambda f=f: f.decide(f.score(fresh(samples)))))

    embedder = ClipEmbedder(**config.filters.clip.model_dump(exclude={"enabled", "min_score", "min_score_fraction"}))
    embedder.setup()
    embedder.embed(fresh(samples[:2]))
    embedded = fresh(samples)
    record("clip_embedding", timed(lambda: embedder.embed(embedded)),
           f"{embedder.model_name}, {embedder.image_size}px; shared by clip, aesthetic, zero-shot concepts")
    clip = build_filter(config, "clip")
    record("clip_score_only", timed(lambda: clip.decide(clip.score(embedded)), 3))
    aesthetic = build_filter(parse_config({"filters": {"aesthetic": {"head": str(head_path)}}}), "aesthetic")
    record("aesthetic_head_only", timed(lambda: aesthetic.decide(aesthetic.score(embedded)), 3), "MLP 768-1024-128-64-16-1")
    keywords = build_filter(parse_config({"filters": {"concepts": {"zero_shot": "off"}}}), "concepts")
    record("concepts_keywords", timed(lambda: keywords.decide(keywords.score(embedded)), 3))
    zero_shot = build_filter(parse_config({"filters": {"concepts": {"zero_shot": "on"}}}), "concepts")
    zero_shot.score(embedded[:1])  # prompt embeddings are computed once per process
    record("concepts_zero_shot_only", timed(lambda: zero_shot.decide(zero_shot.score(embedded)), 3),
           "after the shared embedding; prompts embedded once per process")
    emb_ms = results["clip_embedding"]["ms_per_image"]
    results["clip_total"] = {"ms_per_image": round(emb_ms + results["clip_score_only"]["ms_per_image"], 3),
                             "note": "embedding + score (what a cascade pays when clip is the first embedding filter)"}
    return results


def clip_model_costs(rows: list[dict], models: list[tuple[str, int]]) -> dict:
    """Embedding cost of real open_clip architectures, built with random weights (no weights can be
    downloaded here; speed does not depend on the weights' values). Not via ClipEmbedder, which
    rightly refuses to run a real architecture without weights."""
    import open_clip
    import torch

    torch.set_num_threads(1)
    results = {}
    for name, n in models:
        samples = decoded_samples(rows, 448, n)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        model.eval()
        batch = torch.stack([preprocess(s.image) for s in samples])
        with torch.inference_mode():
            model.encode_image(batch[:1])
            start = time.perf_counter()
            model.encode_image(batch)
            image_s = time.perf_counter() - start
            tokens = open_clip.get_tokenizer(name)([s.caption or "" for s in samples])
            start = time.perf_counter()
            model.encode_text(tokens)
            text_s = time.perf_counter() - start
        ms = 1000 * (image_s + text_s) / len(samples)
        results[name] = {"ms_per_image": round(ms, 2), "images_per_s_per_core": round(1000 / ms, 3),
                         "image_ms": round(1000 * image_s / len(samples), 2),
                         "text_ms": round(1000 * text_s / len(samples), 2), "images": len(samples),
                         "note": "random weights, real architecture: cost only"}
        print(f"  {name:24s} {ms:9.2f} ms/image (image {results[name]['image_ms']}, caption {results[name]['text_ms']})")
        del model
    return results


def summarise_cascade(cascade: Cascade, rows: int, passed: int, wall: float, cpu: float) -> dict:
    return {"rows": rows, "passed": passed, "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "ms_per_input_image": round(1000 * wall / rows, 3), "cpu_ms_per_input_image": round(1000 * cpu / rows, 3),
            "stage_seconds": {k: round(v, 3) for k, v in cascade.timings.items()},
            "stage_rows": dict(cascade.scored), "meaningless": cascade.meaningless, "skipped": cascade.skipped}


def run_cascade(rows_batches, config: Config, score_all: bool) -> dict:
    cascade = Cascade(config, score_all=score_all)
    cascade.setup()
    wall, cpu = time.perf_counter(), time.process_time()
    n = passed = 0
    for batch in rows_batches:
        out = cascade.process(batch)
        n += out.num_rows
        passed += sum(out.column("passed").to_pylist())
    return summarise_cascade(cascade, n, passed, time.perf_counter() - wall, time.process_time() - cpu)


def run_cascades_interleaved(rows_batches, config: Config) -> dict:
    """Default and score_all on the same batches, alternating A-B / B-A batch by batch, so that
    the load of a shared machine drifts over both alike; CPU time is reported beside wall time."""
    modes = {"default": Cascade(config, score_all=False), "score_all": Cascade(config, score_all=True)}
    totals = {m: {"wall": 0.0, "cpu": 0.0, "rows": 0, "passed": 0} for m in modes}
    for cascade in modes.values():
        cascade.setup()
    for i, batch in enumerate(rows_batches):
        for mode in (("default", "score_all") if i % 2 == 0 else ("score_all", "default")):
            wall, cpu = time.perf_counter(), time.process_time()
            out = modes[mode].process(batch)
            totals[mode]["wall"] += time.perf_counter() - wall
            totals[mode]["cpu"] += time.process_time() - cpu
            totals[mode]["rows"] += out.num_rows
            totals[mode]["passed"] += sum(out.column("passed").to_pylist())
    return {m: summarise_cascade(modes[m], t["rows"], t["passed"], t["wall"], t["cpu"]) for m, t in totals.items()}


def pool_batches(pool: Path, batch_rows: int):
    return [b for spec in discover_shards(pool) for b in read_shard(spec, batch_rows=batch_rows)]


def spark_vs_loop(pool: Path, config: Config, loop: dict, tmp: Path) -> dict:
    try:
        from photogenic.pipeline.filtering.job import run_filter
        from photogenic.pipeline.core.spark import get_spark
    except ImportError as err:
        return {"error": f"filter job not available: {err}"}
    spark = get_spark(config, master=None)
    cores = spark.sparkContext.defaultParallelism
    out = tmp / "spark-run"
    start = time.perf_counter()
    funnel = run_filter(pool, out, config, spark=spark, score_all=False)
    cold = time.perf_counter() - start
    shutil.rmtree(out)  # again with warm Python workers (models already loaded in them)
    start = time.perf_counter()
    funnel = run_filter(pool, out, config, spark=spark, score_all=False)
    warm = time.perf_counter() - start
    rows = funnel["rows_in"]
    loop_rate = loop["rows"] / loop["wall_seconds"]
    return {
        "master": spark.sparkContext.master, "default_parallelism": cores, "rows": rows,
        "cold_wall_seconds": round(cold, 3), "warm_wall_seconds": round(warm, 3),
        "spark_rows_per_s_warm": round(rows / warm, 3), "loop_rows_per_s": round(loop_rate, 3),
        "spark_over_loop_throughput_ratio_warm": round((rows / warm) / loop_rate, 3),
        "spark_over_loop_throughput_ratio_cold": round((rows / cold) / loop_rate, 3),
        "note": f"loop = one Python process, one thread per model; Spark = {cores} task slots on this machine",
    }


def _model_seconds(cascade: Cascade) -> float:
    return sum(cascade.timings.values())


def rows_close(x: dict, y: dict, rel: float = 1e-5) -> bool:
    """Equal rows, floats equal up to `rel` (float32 rounding of batched model inference)."""
    import math

    if x.keys() != y.keys():
        return False
    for k in x:
        a, b = x[k], y[k]
        if isinstance(a, float) and isinstance(b, float):
            if not math.isclose(a, b, rel_tol=rel, abs_tol=1e-7):
                return False
        elif a != b:
            return False
    return True


def webpool_modes(batches, config: Config) -> dict:
    """Static, adaptive and score_all on the same batches, the order of the three rotated batch by
    batch so a shared machine's load drifts over all alike; model time is the cascade's stage timers."""
    modes = {"static": Cascade(config, score_all=False, adaptive=False),
             "adaptive": Cascade(config, score_all=False, adaptive=True),
             "score_all": Cascade(config, score_all=True)}
    totals = {m: {"wall": 0.0, "cpu": 0.0, "rows": 0, "passed": 0, "reasons": {}} for m in modes}
    for cascade in modes.values():
        cascade.setup()
    names = list(modes)
    verdicts_same = passing_close = passing_bitwise = True
    reasons_moved = 0
    for i, batch in enumerate(batches):
        outs = {}
        for mode in names[i % 3:] + names[: i % 3]:
            wall, cpu = time.perf_counter(), time.process_time()
            outs[mode] = modes[mode].process(batch)
            totals[mode]["wall"] += time.perf_counter() - wall
            totals[mode]["cpu"] += time.process_time() - cpu
            totals[mode]["rows"] += outs[mode].num_rows
            totals[mode]["passed"] += sum(outs[mode].column("passed").to_pylist())
            for r in outs[mode].column("reject_reason").to_pylist():
                totals[mode]["reasons"][r or "passed"] = totals[mode]["reasons"].get(r or "passed", 0) + 1
        s_rows, a_rows = outs["static"].to_pylist(), outs["adaptive"].to_pylist()
        verdicts_same = verdicts_same and [r["passed"] for r in s_rows] == [r["passed"] for r in a_rows]
        for x, y in zip(s_rows, a_rows):
            if x["passed"] and y["passed"] and x != y:
                passing_close = passing_close and rows_close(x, y)
                passing_bitwise = False
        reasons_moved += sum(x["reject_reason"] != y["reject_reason"] for x, y in zip(s_rows, a_rows))
        print(f"    batch {i + 1}/{len(batches)}: model s static {_model_seconds(modes['static']):.1f}, adaptive "
              f"{_model_seconds(modes['adaptive']):.1f}, score_all {_model_seconds(modes['score_all']):.1f}", flush=True)
    out = {}
    for m, t in totals.items():
        c = modes[m]
        out[m] = {**summarise_cascade(c, t["rows"], t["passed"], t["wall"], t["cpu"]),
                  "model_seconds": round(_model_seconds(c), 3),
                  "model_ms_per_input_row": round(1000 * _model_seconds(c) / t["rows"], 3),
                  "reject_reasons": dict(sorted(t["reasons"].items())), "rejected_by_filter": dict(c.rejected)}
        if c.adaptive:
            out[m]["orders"] = dict(c.orders)
    s, a, f = out["static"], out["adaptive"], out["score_all"]
    out["ratios"] = {
        "static_over_score_all_model_time": round(s["model_seconds"] / f["model_seconds"], 3),
        "adaptive_over_score_all_model_time": round(a["model_seconds"] / f["model_seconds"], 3),
        "adaptive_over_static_model_time": round(a["model_seconds"] / s["model_seconds"], 3),
        "static_over_score_all_cpu": round(s["cpu_seconds"] / f["cpu_seconds"], 3),
        "adaptive_over_static_cpu": round(a["cpu_seconds"] / s["cpu_seconds"], 3),
    }
    # Verdicts never depend on the order; a rejected row's reason is its first failing check in the
    # order its batch ran, so rows failing several checks may record another one under adaptive.
    # A passing row's model scores can differ in float32's last bits: batched inference rounds
    # differently when other rows share the batch (as it does between runs with other batch sizes).
    out["static_and_adaptive_verdicts_identical"] = verdicts_same
    out["passing_rows_identical_up_to_float32_rounding"] = passing_close
    out["passing_rows_bitwise_identical"] = passing_bitwise
    out["rejected_rows_with_another_reason_under_adaptive"] = reasons_moved
    return out


def loop_over_shards(pool: Path, config: Config, scores_dir: Path) -> dict:
    """The plain runner: job.process_shard over every shard, in this process, one cascade."""
    from photogenic.pipeline.filtering.job import process_shard

    cascade = Cascade(config)
    setup = time.perf_counter()
    cascade.setup()
    setup = time.perf_counter() - setup
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for spec in discover_shards(pool, config.job.folder_shard_size):
        rows += process_shard(spec, cascade, scores_dir, config.job.batch_rows)["rows"]
    wall = time.perf_counter() - start
    return {"rows": rows, "wall_seconds": round(wall, 3), "setup_seconds": round(setup, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3), "rows_per_s": round(rows / wall, 3)}


_WORKER: dict = {}


def _worker_setup(config_json: str) -> None:
    cascade = Cascade(parse_config(json.loads(config_json)))
    cascade.setup()
    _WORKER["cascade"] = cascade


def _worker_ready(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def _worker_shard(args: tuple) -> int:
    from photogenic.pipeline.filtering.job import process_shard

    spec, scores_dir, batch_rows = args
    return process_shard(spec, _WORKER["cascade"], Path(scores_dir), batch_rows)["rows"]


def loop_over_shards_parallel(pool: Path, config: Config, scores_dir: Path, processes: int) -> dict:
    """The same per-shard work in `processes` plain Python processes (multiprocessing, spawned,
    filters loaded before the clock starts): the parallelism of Spark local[N] without Spark."""
    import multiprocessing

    specs = discover_shards(pool, config.job.folder_shard_size)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes, initializer=_worker_setup, initargs=(config.model_dump_json(),)) as workers:
        workers.map(_worker_ready, range(4 * processes), chunksize=1)
        start = time.perf_counter()
        rows = sum(workers.map(_worker_shard, [(s, str(scores_dir), config.job.batch_rows) for s in specs], chunksize=1))
        wall = time.perf_counter() - start
    return {"rows": rows, "processes": processes, "wall_seconds": round(wall, 3), "rows_per_s": round(rows / wall, 3)}


def webpool_spark(pool: Path, config: Config, tmp: Path, reps: int = 2) -> dict:
    """Spark local[2] vs the plain loop (one process) and vs the same loop in two processes, run
    alternately `reps` times so that the load of the shared machine drifts over all alike; rates are
    total rows / total wall over the repetitions. Spark's first run (cold) is reported apart."""
    from photogenic.pipeline.core.spark import get_spark
    from photogenic.pipeline.filtering.job import run_filter

    spark = get_spark(config, master="local[2]")

    def spark_run(label: str) -> dict:
        start = time.perf_counter()
        funnel = run_filter(pool, tmp / f"spark-{label}", config, spark=spark, score_all=False)
        wall = time.perf_counter() - start
        return {"rows": funnel["rows_in"], "passed": funnel["passed"], "wall_seconds": round(wall, 3),
                "rows_per_s": round(funnel["rows_in"] / wall, 3)}

    runs: dict[str, list[dict]] = {"loop": [], "loop_2_processes": [], "spark_warm": []}
    cold = None
    for rep in range(reps):
        runs["loop"].append(loop_over_shards(pool, config, tmp / f"loop-{rep}" / "scores"))
        runs["loop_2_processes"].append(loop_over_shards_parallel(pool, config, tmp / f"loop2-{rep}" / "scores", 2))
        if cold is None:  # Python workers start and load the filters
            cold = spark_run("cold")
            print(f"  spark cold: {cold['rows']} rows in {cold['wall_seconds']} s = {cold['rows_per_s']} rows/s", flush=True)
        runs["spark_warm"].append(spark_run(f"warm-{rep}"))
        for name, r in runs.items():
            print(f"  rep {rep + 1} {name}: {r[-1]['rows']} rows in {r[-1]['wall_seconds']} s = {r[-1]['rows_per_s']} rows/s",
                  flush=True)
    rate = {name: round(sum(r["rows"] for r in rs) / sum(r["wall_seconds"] for r in rs), 3) for name, rs in runs.items()}
    return {
        "master": spark.sparkContext.master, "default_parallelism": spark.sparkContext.defaultParallelism,
        "filters": [f.name for f in Cascade(config).filters], "runs": runs, "spark_cold": cold, "rows_per_s": rate,
        "spark_over_loop_rows_per_s_warm": round(rate["spark_warm"] / rate["loop"], 3),
        "spark_over_loop_rows_per_s_cold": round(cold["rows_per_s"] / rate["loop"], 3),
        "spark_over_loop_2_processes_rows_per_s_warm": round(rate["spark_warm"] / rate["loop_2_processes"], 3),
        "loop_2_processes_over_loop": round(rate["loop_2_processes"] / rate["loop"], 3),
        "note": "loop = job.process_shard over the shards in one process (filters loaded before the clock); "
                "loop_2_processes = the same in 2 spawned processes; Spark local[2], cold = its first run "
                "(Python workers start and load the filters), warm = workers reused",
    }


# The quality-tuning configuration of the web-pool comparison: the default filters plus an aesthetic
# threshold, the filter that decides a quality-tuning pool (Emu keeps images above a high
# aesthetic score before anyone reviews them). Its keep share is LAION-Aesthetics v2 5+'s share
# of LAION-2B-en, the subset Stable Diffusion's last checkpoints trained on: ~600M images
# (Baio and Willison, "Exploring 12 Million of the Images Used to Train Stable Diffusion", waxy.org,
# 2022) of 2.32B (LAION-5B paper). Emu's threshold is stricter still (it keeps a few hundred
# thousand of billions through all its automatic filters), so this keeps more rows than a
# quality-tuning run would.
AESTHETIC_KEEP_SHARE = 600 / 2320


def quality_tuning_config(batches, tmp: Path) -> tuple[Config, dict]:
    """The default config plus an aesthetic head and threshold. The head is a seeded random
    LAION-format MLP on the tiny-random embeddings (as meaningless as those: only its cost and the
    share it rejects matter here); the threshold is the score that keeps AESTHETIC_KEEP_SHARE of
    the rows, found in an untimed pass that scores every decodable row of `batches` (no models
    besides the embedding)."""
    import numpy as np
    import torch

    from photogenic.filters.aesthetic import build_head
    from photogenic.filters.aesthetic_cli import save_head

    torch.manual_seed(0)
    head = tmp / "bench-aesthetic-head.pth"
    save_head(build_head(768), head, {"embedding_model": "tiny-random/random", "meaningless": True,
                                      "note": "seeded random LAION-format head for bench/filters.py"})
    scoring = parse_config({"filters": {"aesthetic": {"head": str(head)},
                                        **{n: {"enabled": False} for n in ("ocr", "offensive", "concepts")}}})
    cascade = Cascade(scoring, score_all=True)
    cascade.setup()
    scores = [v for b in batches for v in cascade.process(b).column("aesthetic_score").to_pylist() if v is not None]
    threshold = float(np.quantile(scores, 1 - AESTHETIC_KEEP_SHARE))
    config = parse_config({"filters": {"aesthetic": {"head": str(head), "min_score": threshold}}})
    return config, {"aesthetic_min_score": round(threshold, 6), "aesthetic_keep_share": round(AESTHETIC_KEEP_SHARE, 4),
                    "calibrated_on_rows": len(scores),
                    "note": "default filters + aesthetic threshold keeping LAION-Aesthetics v2 5+'s share of "
                            "LAION-2B-en (600M / 2.32B); random head on tiny-random embeddings: cost real, scores meaningless"}


def print_modes(label: str, modes: dict) -> None:
    for mode in ("static", "adaptive", "score_all"):
        r = modes[mode]
        print(f"  {label} {mode:9s} model {r['model_ms_per_input_row']:8.2f} ms/input row, wall {r['ms_per_input_image']:8.2f}, "
              f"cpu {r['cpu_ms_per_input_image']:8.2f} ({r['rows']} rows, {r['passed']} passed) {r['reject_reasons']}")
    print(f"  {label} ratios " + json.dumps(modes["ratios"]) +
          f"; static and adaptive verdicts identical: {modes['static_and_adaptive_verdicts_identical']}, passing rows "
          f"identical up to float32 rounding: {modes['passing_rows_identical_up_to_float32_rounding']} (bitwise: "
          f"{modes['passing_rows_bitwise_identical']}), "
          f"rejected rows recording another reason under adaptive: {modes['rejected_rows_with_another_reason_under_adaptive']}")
    print(f"  {label} adaptive orders (batches): {modes['adaptive'].get('orders')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pool", nargs="?", default="sample_pool")
    parser.add_argument("--limit", type=int, default=60, help="images for the per-filter costs")
    parser.add_argument("--web-rows", type=int, default=5000, help="rows of the web-like pool (bench/webpool.py)")
    parser.add_argument("--web-mode-rows", type=int, default=512,
                        help="rows of the web-like pool the static/adaptive/score_all comparison runs on")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "filters.json"))
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}; results of other sections already "
                             "in --out are kept")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        sys.exit(f"unknown sections {sorted(sections - set(SECTIONS))}; choose from {SECTIONS}")
    pool = Path(args.pool)
    if not pool.exists():
        sys.exit(f"no sample pool at {pool}: build it with `make sample-pool` (photogenic sample-pool {pool})")
    load_before = os.getloadavg()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_before)} ({os.cpu_count()} cpus)")
    rows = pool_rows(pool)
    config = Config()
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() and sections != set(SECTIONS) else {}
    result: dict = {
        **previous,
        "pool": str(pool.resolve()), "pool_rows": len(rows),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_before],
                    "python": platform.python_version(), "platform": platform.platform()},
        "threads_per_model": int(os.environ["PHOTOGENIC_WORKER_THREADS"]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "technical" in sections:
            from bench.technical import run as technical_bench

            print("technical filter (issue 11), legacy Laplacian variance vs focus of the sharpest region:")
            result["technical"] = technical_bench(pool, rows, args.limit)
        if "per_filter" in sections:
            print(f"per-filter cost on one core ({min(args.limit, len(rows))} images of {pool}):")
            result["per_filter"] = per_filter_costs(rows, args.limit, tmp)
        if "clip_models" in sections:
            print("real CLIP architectures (embedding cost on one core):")
            result["clip_models"] = clip_model_costs(rows, [("ViT-B-32", 16), ("ViT-L-14", 6)])
        if "cascade" in sections or "spark" in sections:
            batches = pool_batches(pool, config.job.batch_rows)
        if "cascade" in sections:
            print("cascade, whole pool, one process, default and score_all interleaved batch by batch:")
            both = run_cascades_interleaved(batches, config)
            default, full = both["default"], both["score_all"]
            for mode, r in both.items():
                print(f"  {mode:9s} {r['ms_per_input_image']:9.2f} ms/input image wall, {r['cpu_ms_per_input_image']:9.2f} cpu"
                      f" ({r['rows']} rows, {r['passed']} passed)")
            result["cascade"] = {
                "default": default, "score_all": full,
                "cost_ratio_default_over_score_all": round(default["ms_per_input_image"] / full["ms_per_input_image"], 3),
                "cpu_cost_ratio_default_over_score_all": round(default["cpu_ms_per_input_image"] / full["cpu_ms_per_input_image"], 3),
            }
            print(f"  ratio default / score_all = {result['cascade']['cost_ratio_default_over_score_all']} wall, "
                  f"{result['cascade']['cpu_cost_ratio_default_over_score_all']} cpu")
        if "spark" in sections:
            print("plain Python loop (default cascade), then the Spark filter job on the same pool:")
            loop = run_cascade(batches, config, score_all=False)
            result["spark"] = spark_vs_loop(pool, config, loop, tmp)
            print("  " + json.dumps(result["spark"]))
        if "webpool" in sections or "webpool_spark" in sections:
            from bench.webpool import mix_of, webpool

            web = webpool(args.web_rows, source=pool)
            result["webpool_mix"] = {"pool": str(web), "rows": args.web_rows, **{k: round(v, 4) for k, v in mix_of(web).items()}}
            print(f"web-like pool {web}: " + json.dumps(result["webpool_mix"]))
        if "webpool" in sections:
            web_batches = pool_batches(web, config.job.batch_rows)
            web_batches = web_batches[: -(-args.web_mode_rows // config.job.batch_rows)]
            n = sum(b.num_rows for b in web_batches)
            print(f"web-like pool, first {n} rows: static, adaptive and score_all cascades interleaved batch by batch:")
            result["webpool"] = webpool_modes(web_batches, config)
            print_modes("default config:", result["webpool"])
            print("  quality-tuning config (default + aesthetic threshold), calibrating the threshold:")
            qt_config, qt = quality_tuning_config(web_batches, tmp)
            print("  " + json.dumps(qt))
            result["webpool_quality_tuning"] = {"config": qt, **webpool_modes(web_batches, qt_config)}
            print_modes("quality-tuning config:", result["webpool_quality_tuning"])
        if "webpool_spark" in sections:
            cheap = parse_config({"filters": CHEAP_FILTERS})
            print(f"web-like pool, all {args.web_rows} rows, cheap filters ({', '.join(f.name for f in Cascade(cheap).filters)}): "
                  "plain loop, the same in 2 processes, Spark local[2], alternated:")
            result["webpool_spark"] = webpool_spark(web, cheap, tmp)
            ws = result["webpool_spark"]
            print(f"  rows/s over the repetitions: {json.dumps(ws['rows_per_s'])}")
            print(f"  ratio Spark local[2] / loop rows/s: warm {ws['spark_over_loop_rows_per_s_warm']}, cold "
                  f"{ws['spark_over_loop_rows_per_s_cold']}; Spark / 2-process loop (warm) "
                  f"{ws['spark_over_loop_2_processes_rows_per_s_warm']}; 2-process loop / loop {ws['loop_2_processes_over_loop']}")
    measured = sections | ({"webpool_quality_tuning"} if "webpool" in sections else set())
    for section in measured:  # a shared machine inflates every number alike: say how loaded it was
        if isinstance(result.get(section), dict):
            result[section]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    result["meaningless"] = ("clip_score (and aesthetic/zero-shot concepts) come from the random tiny-random CLIP "
                             "model: their costs are real for that model, their values mean nothing")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
