"""A small fake run directory with real images, laid out like the stages write it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from photogenic.pipeline.core.config import Config
from photogenic.pipeline.core.runio import mark_success, write_json_atomic, write_parquet_atomic
from photogenic.pipeline.core.schema import SCORE_SCHEMA

SKIMAGE_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "page", "horse")
# (reject_reason, reject_detail) for the rows that fail, in order; the rest pass.
REJECTS = [
    ("unreadable", "cannot identify image file"),
    ("geometry", "short side 64 < 256"),
    ("geometry", "aspect 3.50 > 3.0"),
    ("technical", "sharpness 12.0 < 40.0"),
    ("technical", "sharpness 3.1 < 40.0"),
    ("technical", "sharpness 20.5 < 40.0"),
    ("ocr", "11 words > 5"),
    ("offensive", "nsfw 0.91 > 0.5"),
]
CONCEPTS = ("animals", "food", "people", "landscape")


def _save_images(folder: Path) -> list[str]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SKIMAGE_IMAGES:
        arr = getattr(data, name)()
        img = Image.fromarray(arr if arr.dtype == np.uint8 else (arr * 255).astype(np.uint8))
        img.thumbnail((320, 320))
        path = folder / f"{name}.jpg"
        img.convert("RGB").save(path, quality=85)
        paths.append(str(path))
    bad = folder / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    return [str(bad)] + paths


def score_rows(images: list[str], n: int = 30) -> list[dict]:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        reason, detail = REJECTS[i] if i < len(REJECTS) else ("", "")
        source = images[0] if reason == "unreadable" else images[1 + i % (len(images) - 1)]
        decoded = reason not in ("unreadable",)
        rows.append({
            "key": f"k{i:03d}", "caption": f"caption number {i}", "passed": not reason,
            "reject_reason": reason, "reject_detail": detail,
            "width": 320 if decoded else None, "height": 240 if decoded else None,
            "aspect": 1.33 if decoded else None, "format": "JPEG" if decoded else None, "bytes": 20000 + i,
            "sha256": f"{i:064x}", "phash": int(rng.integers(-2**62, 2**62)),
            "sharpness": float(rng.uniform(10, 400)) if decoded else None,
            "brightness": float(rng.uniform(40, 200)) if decoded else None,
            "contrast": float(rng.uniform(10, 80)) if decoded else None,
            "nsfw_score": float(rng.uniform(0, 1)) if decoded else None, "offensive_term": None,
            "ocr_words": int(rng.integers(0, 12)) if decoded else None, "ocr_text": None,
            "clip_score": float(rng.uniform(-0.1, 0.1)) if decoded else None, "aesthetic_score": None,
            "concept": CONCEPTS[i % len(CONCEPTS)] if decoded else None,
            "concept_score": float(rng.uniform(0, 1)) if decoded else None,
            "likes": int(rng.integers(0, 500)), "views": int(rng.integers(500, 5000)),
            "source": source, "shard": "folder-00000" if i < 15 else "folder-00001", "meta": "{}",
        })
    return rows


def make_fake_run(root: Path, stages: str = "all") -> Path:
    """Build RUN dirs: scores (always), then candidates, review, export, model, eval unless `stages`='scores'."""
    run = root / "run"
    images = _save_images(root / "images")
    rows = score_rows(images)
    scores = run / "scores"
    # Two part files, like two shards.
    for part, chunk in (("a", rows[:15]), ("b", rows[15:])):
        write_parquet_atomic(pa.Table.from_pylist(chunk, schema=SCORE_SCHEMA), scores / f"part-{part}.parquet")
    config = Config().model_dump(mode="json")
    passed = [r for r in rows if r["passed"]]
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["passed"]:
            reasons[r["reject_reason"]] = reasons.get(r["reject_reason"], 0) + 1
    write_json_atomic({"rows_in": len(rows), "passed": len(passed), "reject_reasons": reasons, "config": config,
                       "meaningless": ["clip_score"], "skipped_filters": {"aesthetic": "no head configured"}},
                      scores / "_funnel.json")
    mark_success(scores)
    if stages == "scores":
        return run

    candidates = passed[:18]
    cand_table = pa.Table.from_pylist(
        [{**r, "engagement": r["likes"] / r["views"], "concept_rank": i, "dup_group": None}
         for i, r in enumerate(candidates)])
    write_parquet_atomic(cand_table, run / "candidates" / "part-00000.parquet")
    # The shape select wrote before the one stage summary (read_details still reads it) (the parts the report reads).
    write_json_atomic({"target": 18, "seed": 0, "selected": len(candidates),
                       "duplicates_removed": {"exact": 2, "near": 1}, "engagement": {"method": "bayes"},
                       "concepts": {c: {"passed": 6, "after_dedup": 5, "available": 5, "selected": 4}
                                    for c in CONCEPTS}}, run / "candidates" / "_summary.json")
    mark_success(run / "candidates")

    pass1 = [{"key": r["key"], "keep": i % 3 != 0, "complete": True} for i, r in enumerate(candidates)]
    kept1 = [d["key"] for d in pass1 if d["keep"]]
    pass2 = [{"key": k, "keep": i % 2 == 0, "complete": i != 1} for i, k in enumerate(kept1)]
    for p, decisions in ((1, pass1), (2, pass2)):
        folder = run / "review" / f"pass{p}"
        write_parquet_atomic(pa.Table.from_pylist(decisions), folder / "decisions.parquet")
        annotations = [{"key": d["key"], "annotator": f"sim{j}", "keep": d["keep"]}
                       for d in decisions for j in range(1 if p == 1 else 3)]
        write_parquet_atomic(pa.Table.from_pylist(annotations), folder / "annotations.parquet")
        # The shape annotation.pull writes (annotation/quality.py).
        raters = sorted({a["annotator"] for a in annotations})
        # annotation/simulate.py marks a simulated pass with simulation.json.
        write_json_atomic({"simulated": True, "annotators": 1 if p == 1 else 3, "seed": 0},
                          folder / "simulation.json")
        write_json_atomic({
            "pass": p, "tasks": len(decisions), "n_annotations": len(annotations),
            "annotators": [{"annotator": r, "annotations": sum(a["annotator"] == r for a in annotations),
                            "keep_rate": 0.5, "gold_accuracy": None} for r in raters],
            "agreement": {"fleiss_kappa_keep": 0.42, "percent_agreement": 0.8,
                          "cohen_kappa_pairs": [{"a": "sim0", "b": "sim1", "shared_tasks": 3, "cohen_kappa": 0.3}]},
        }, folder / "quality.json")
        mark_success(folder)

    kept2 = [d["key"] for d in pass2 if d["keep"]]
    manifest = [{"key": k, "split": "validation" if i == 0 else "train", "caption": f"c {k}"}
                for i, k in enumerate(kept2)]
    write_parquet_atomic(pa.Table.from_pylist(manifest), run / "export" / "manifest.parquet")
    write_json_atomic({"run": str(run)}, run / "export" / "lineage.json")
    mark_success(run / "export")

    model = run / "model"
    (model / "training_state").mkdir(parents=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with open(model / "training_state" / "metrics.jsonl", "w") as fh:
        for step in range(1, 21):
            rec = {"step": step, "loss": 1.0 / step, "lr": 1e-4}
            if step % 5 == 0:
                rec["val_loss"] = 1.2 / step
            fh.write(json.dumps(rec) + "\n")
    return run
