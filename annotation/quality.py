"""Annotator quality that open-source Label Studio does not compute: agreement on overlapping
tasks (Krippendorff's alpha, Fleiss' kappa, Cohen's kappa per pair), gold accuracy, keep rate
and time per task per annotator."""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np


def krippendorff_alpha(units: list[list[float]], level: str = "nominal") -> float | None:
    """Alpha over units (each a list of the values its raters gave); units with < 2 values are
    not pairable and are skipped. None when there is nothing to measure."""
    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    values = sorted({v for u in units for v in u})
    index = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for u in units:
        m = len(u)
        counts = Counter(u)
        for a, ca in counts.items():
            for b, cb in counts.items():
                pairs = ca * (cb - 1) if a == b else ca * cb
                coincidence[index[a], index[b]] += pairs / (m - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    if level == "nominal":
        delta = 1.0 - np.eye(len(values))
    else:  # interval
        arr = np.array(values, dtype=float)
        delta = (arr[:, None] - arr[None, :]) ** 2
    observed = (coincidence * delta).sum() / n
    expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    if expected == 0:
        return 1.0 if observed == 0 else None
    return float(1.0 - observed / expected)


def fleiss_kappa(units: list[list[int]]) -> tuple[float | None, int, int]:
    """Fleiss' kappa over the units with the most common number (>= 2) of raters.
    Returns (kappa, raters per unit, units used)."""
    sizes = Counter(len(u) for u in units if len(u) >= 2)
    if not sizes:
        return None, 0, 0
    m = max(sizes, key=lambda s: (sizes[s], s))
    chosen = [u for u in units if len(u) == m]
    categories = sorted({v for u in chosen for v in u})
    table = np.array([[Counter(u)[c] for c in categories] for u in chosen], dtype=float)
    p_j = table.sum(axis=0) / (len(chosen) * m)
    p_i = ((table ** 2).sum(axis=1) - m) / (m * (m - 1))
    p_bar, p_e = p_i.mean(), (p_j ** 2).sum()
    if p_e == 1:
        return (1.0 if p_bar == 1 else None), m, len(chosen)
    return float((p_bar - p_e) / (1 - p_e)), m, len(chosen)


def cohen_kappa(a: list[int], b: list[int]) -> float | None:
    if not a:
        return None
    a, b = np.asarray(a), np.asarray(b)
    p_o = float((a == b).mean())
    cats = np.union1d(a, b)
    p_e = float(sum((a == c).mean() * (b == c).mean() for c in cats))
    if p_e == 1:
        return 1.0 if p_o == 1 else None
    return (p_o - p_e) / (1 - p_e)


def summarise(annotations: list[dict], gold: dict[str, bool]) -> dict:
    """Quality figures from annotation rows (key, annotator, keep, mean_rating, lead_time)."""
    rows = [r for r in annotations if r.get("keep") is not None]
    by_key: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_key[r["key"]][r["annotator"]] = r  # one vote per annotator per key
    keep_units = [[int(v["keep"]) for v in d.values()] for d in by_key.values()]
    rating_units = [[v["mean_rating"] for v in d.values() if v.get("mean_rating") is not None]
                    for d in by_key.values()]
    fleiss, raters, fleiss_units = fleiss_kappa(keep_units)
    overlap_units = [u for u in keep_units if len(u) >= 2]
    agreement = {
        "overlapping_tasks": len(overlap_units),
        "percent_agreement": (float(np.mean([len(set(u)) == 1 for u in overlap_units]))
                              if overlap_units else None),
        "krippendorff_alpha_keep": krippendorff_alpha(keep_units),
        "fleiss_kappa_keep": fleiss,
        "fleiss_raters_per_task": raters,
        "fleiss_tasks": fleiss_units,
        "krippendorff_alpha_mean_rating": krippendorff_alpha(rating_units, level="interval"),
        "cohen_kappa_pairs": _pairwise(by_key),
    }
    return {"annotators": _per_annotator(rows, gold), "agreement": agreement,
            "n_annotations": len(rows), "n_gold_tasks": len(gold)}


def _pairwise(by_key: dict[str, dict[str, dict]]) -> list[dict]:
    names = sorted({a for d in by_key.values() for a in d})
    out = []
    for x, y in itertools.combinations(names, 2):
        shared = [d for d in by_key.values() if x in d and y in d]
        if shared:
            a = [int(d[x]["keep"]) for d in shared]
            b = [int(d[y]["keep"]) for d in shared]
            out.append({"a": x, "b": y, "shared_tasks": len(shared), "cohen_kappa": cohen_kappa(a, b)})
    return out


def _per_annotator(rows: list[dict], gold: dict[str, bool]) -> list[dict]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["annotator"]].append(r)
    out = []
    for name, rs in sorted(grouped.items()):
        gold_rs = [r for r in rs if r["key"] in gold]
        times = [r["lead_time"] for r in rs if r.get("lead_time") is not None]
        ratings = [r["mean_rating"] for r in rs if r.get("mean_rating") is not None]
        out.append({
            "annotator": name,
            "annotations": len(rs),
            "keep_rate": float(np.mean([r["keep"] for r in rs])),
            "gold_tasks": len(gold_rs),
            "gold_accuracy": (float(np.mean([r["keep"] == gold[r["key"]] for r in gold_rs]))
                              if gold_rs else None),
            "mean_seconds_per_task": float(np.mean(times)) if times else None,
            "median_seconds_per_task": float(np.median(times)) if times else None,
            "mean_rating": float(np.mean(ratings)) if ratings else None,
        })
    return out
