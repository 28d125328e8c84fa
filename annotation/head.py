"""The head in the loop: after a pass is pulled, a LAION-format aesthetic head is learnt from its
decisions on the CLIP embeddings the filter job saved (RUN/embeddings), and judged on reviewed
images it never saw.

    RUN/review/NAME/head.pth        the head (LAION's keys; loads in [filters.aesthetic] head)
    RUN/review/NAME/head.pth.json   what it learnt from, and its held-out AUC and correlation

The next pass imports its tasks best-first by this head (`push`), and `[select] head = "auto"`
blends the latest head with engagement in the next run's ranking. With the random `tiny-random`
CLIP model the embeddings carry no meaning, and neither does the head: its metadata says so.
"""
from __future__ import annotations

import hashlib
import math
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import read_json, read_parquet

HEAD = "head.pth"
MEANINGLESS = ("embeddings come from the random 'tiny-random' CLIP model: this head, its AUC and its "
               "ordering mean nothing; use a real open_clip model (see README) for a head worth using")


def head_path(run, pass_name: str) -> Path:
    return RunDir.of(run).review(pass_name) / HEAD


def labels(run, pass_name: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(keys, keep 0/1, mean rating or None) of the pass's complete decisions."""
    table = read_parquet(RunDir.of(run).decisions(pass_name)).to_pylist()
    rows = [r for r in table if r.get("complete", True) and r.get("keep") is not None and r.get("key")]
    keep = np.array([float(bool(r["keep"])) for r in rows], np.float32)
    ratings = [r.get("mean_rating") for r in rows]
    rated = np.array([np.nan if v is None else float(v) for v in ratings], np.float32)
    return [str(r["key"]) for r in rows], keep, (rated if np.isfinite(rated).sum() >= len(rows) * 0.5 else None)


def held_out_metrics(pred: np.ndarray, keep: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """AUC of the head's scores against the keep decisions (Mann-Whitney U / n1 n0) and Spearman's
    correlation with the learnt target."""
    from scipy.stats import mannwhitneyu, spearmanr

    out: dict[str, Any] = {"n_held_out": int(len(pred)), "auc": None, "spearman": None}
    pos, neg = pred[keep >= 0.5], pred[keep < 0.5]
    if len(pos) and len(neg):
        out["auc"] = float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))
    if len(pred) >= 3 and np.std(target) > 0 and np.std(pred) > 0:
        out["spearman"] = float(spearmanr(pred, target).statistic)
    return out


def learn(run, pass_name: str, config: ReviewConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit and save the pass's head; returns its metadata, or {"skipped": why}."""
    from photogenic.filters.aesthetic import score_embeddings
    from photogenic.filters.aesthetic_cli import save_head, train_head
    from photogenic.filters.clip import read_embeddings

    cfg = config.head
    run = RunDir.of(run)
    if not cfg.enabled:
        return {"skipped": "[review.head] enabled = false"}
    if not run.embeddings.exists():
        return {"skipped": f"no {run.embeddings} (run `photogenic filter --save-embeddings`)"}
    keys, keep, rated = labels(run, pass_name)
    signature = hashlib.sha256(json.dumps([cfg.model_dump(), keys, keep.tolist(),
                                           None if rated is None else np.nan_to_num(rated).tolist()]).encode()).hexdigest()
    previous = metadata(run, pass_name)
    if previous and previous.get("decisions_signature") == signature and head_path(run, pass_name).exists():
        return {**previous, "reused": True}  # the same decisions and settings: the same head
    emb_keys, vectors, model = read_embeddings(run.embeddings)
    index = {k: i for i, k in enumerate(emb_keys)}
    matched = [i for i, k in enumerate(keys) if k in index]
    if len(matched) < cfg.min_labels:
        return {"skipped": f"{len(matched)} decided image(s) with embeddings, fewer than "
                           f"[review.head] min_labels = {cfg.min_labels}"}
    keep = keep[matched]
    target = rated[matched] if rated is not None else keep
    target = np.where(np.isfinite(target), target, np.nanmean(target)).astype(np.float32)
    if len(np.unique(keep)) < 2:
        return {"skipped": f"all {len(keep)} decisions are {'keep' if keep[0] else 'drop'}: nothing to learn"}
    x = vectors[[index[keys[i]] for i in matched]]
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    n_out = max(2, int(round(len(x) * cfg.val_fraction)))
    held, train = order[:n_out], order[n_out:]
    batch = max(64, math.ceil(len(train) / 50))  # at most ~50 steps an epoch
    epochs = max(1, min(cfg.epochs, cfg.max_steps // math.ceil(len(train) / batch)))
    head, fit = train_head(x[train], target[train], epochs=epochs, batch_size=batch, val_fraction=0.2,
                           seed=cfg.seed)

    metrics = held_out_metrics(score_embeddings(head, x[held]), keep[held], target[held])
    meaningless = bool(model and str(model).startswith("tiny-random"))
    meta = {"pass": pass_name, "target": "mean_rating" if rated is not None else "keep",
            "embedding_model": model, "input_size": int(x.shape[1]), "labels": len(keys),
            "with_embeddings": len(matched), "kept": int(keep.sum()), "fit": fit, "held_out": metrics,
            "meaningless": meaningless, "notes": [MEANINGLESS] if meaningless else [],
            "decisions_signature": signature}
    save_head(head, head_path(run, pass_name), meta)
    auc = "-" if metrics["auc"] is None else f"{metrics['auc']:.3f}"
    echo(f"head for {pass_name}: learnt from {len(train)} decision(s), held-out AUC {auc} on "
         f"{metrics['n_held_out']} image(s) -> {head_path(run, pass_name)}")
    if meaningless:
        echo(f"note: {MEANINGLESS}")
    return meta


def head_scores(head_file: Path, run, keys: list[str]) -> dict[str, float]:
    """key -> the head's score, for the keys with a saved embedding."""
    from photogenic.filters.aesthetic import score_saved_embeddings

    saved, scores, _ = score_saved_embeddings(head_file, RunDir.of(run).embeddings)
    wanted = set(keys)
    return {k: float(v) for k, v in zip(saved, scores) if k in wanted}


def metadata(run, pass_name: str) -> dict[str, Any] | None:
    return read_json(Path(str(head_path(run, pass_name)) + ".json"))
