"""The technical filter on the sample pool: cost, confusion per kind, catch rate per defect strength.

Run through `python -m bench.filters --sections technical`. Every figure is measured in the run,
the old filter (variance of the Laplacian, `sharpness < 40`, as shipped before issue 11) side by
side with the new one on the same decoded images.
"""
from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from photogenic.filters.base import Sample
from photogenic.filters.technical import TechnicalFilter
from photogenic.pipeline.sample import kinds
from photogenic.pipeline.core.config import Config
from photogenic.pipeline.sample.pool import legacy_grey

LEGACY_MIN_SHARPNESS = 40.0
DECODE_SIZES = (512, 1024)  # technical alone; the default cascade (OCR decodes at 1024)
DEFECT_KINDS = ("blurred", "gaussian_blur", "motion_blur", "defocus", "upscaled", "jpeg_damage")
CLIP_THRESHOLDS = (0.01, 0.05, 0.1, 0.25, 0.5)


def legacy_score(image) -> dict[str, float]:
    """The technical filter before issue 11: all three columns, as it computed them."""
    arr = legacy_grey(image)
    return {"sharpness": float(cv2.Laplacian(arr, cv2.CV_32F).var()), "brightness": float(arr.mean()),
            "contrast": float(arr.std())}


def decode(data: bytes, size: int) -> Image.Image | None:
    """As the cascade decodes: JPEG draft at the decode size, RGB, bilinear thumbnail."""
    try:
        img = Image.open(io.BytesIO(data))
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        img = img.convert("RGB")
    except Exception:
        return None
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    return img


def technical_filter() -> TechnicalFilter:
    return TechnicalFilter(**Config().filters.technical.model_dump(exclude={"enabled"}))


def judged_rows(rows: list[dict], truth: dict) -> list[dict]:
    """Rows that reach the technical filter: decodable, expected to pass or to fail `technical`."""
    return [r for r in rows if r["image"] and truth[r["key"]]["expected_reason"] in ("", "technical")]


def cost(rows: list[dict], limit: int) -> dict:
    """ms per image, old and new, interleaved over three rounds (best round of each kept)."""
    new = technical_filter()
    out = {}
    for size in DECODE_SIZES:
        samples = [Sample(r["key"], r["caption"], r["image"], image=img) for r in rows[: limit * 2]
                   if (img := decode(r["image"], size)) is not None][:limit]
        best = {"legacy": float("inf"), "new": float("inf")}
        for round_ in range(3):
            for name in (("legacy", "new") if round_ % 2 == 0 else ("new", "legacy")):
                start = time.perf_counter()
                if name == "legacy":
                    [legacy_score(s.image) for s in samples]
                else:
                    new.decide(new.score(samples))
                best[name] = min(best[name], time.perf_counter() - start)
        ms = {k: round(1000 * v / len(samples), 3) for k, v in best.items()}
        out[f"decode_{size}"] = {"images": len(samples), "legacy_ms_per_image": ms["legacy"],
                                 "new_ms_per_image": ms["new"], "new_over_legacy": round(ms["new"] / ms["legacy"], 3)}
    return out


def confusion(rows: list[dict], truth: dict) -> dict:
    """Per kind: how many pass / are rejected, new filter vs old, at both decode sizes."""
    new = technical_filter()
    tables = {}
    for size in DECODE_SIZES:
        table: dict[str, dict] = {}
        for r in judged_rows(rows, truth):
            img = decode(r["image"], size)
            if img is None:
                continue
            kind = truth[r["key"]]["kind"]
            scores = new.score([Sample(r["key"], r["caption"], r["image"], image=img)])
            rejected_new = new.decide(scores)[0] is not None
            rejected_old = legacy_score(img)["sharpness"] < LEGACY_MIN_SHARPNESS
            cell = table.setdefault(kind, {"n": 0, "new_rejected": 0, "legacy_rejected": 0,
                                           "expected": truth[r["key"]]["expected_reason"] or "pass"})
            cell["n"] += 1
            cell["new_rejected"] += rejected_new
            cell["legacy_rejected"] += rejected_old
        for cell in table.values():
            cell["new_rejected_share"] = round(cell["new_rejected"] / cell["n"], 4)
            cell["legacy_rejected_share"] = round(cell["legacy_rejected"] / cell["n"], 4)
        tables[f"decode_{size}"] = dict(sorted(table.items()))
    return tables


def clean_images(rows: list[dict], truth: dict, n: int) -> list[Image.Image]:
    picked = [r for r in rows if truth[r["key"]]["kind"] == "clean"][:n]
    return [img for r in picked if (img := decode(r["image"], 1024)) is not None]


def stored(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def strength_sweep(rows: list[dict], truth: dict, n: int = 60) -> dict:
    """Share of clean photos rejected once a defect of a given strength is applied (strengths in
    pixels at the measure scale, as in the pool), new filter vs old."""
    new = technical_filter()
    sources = clean_images(rows, truth, n)
    rng = random.Random(0)

    defects = {  # the pool's own generators at fixed strengths (motion at random angles)
        **{f"gaussian_radius_{r}": (lambda r: lambda img: kinds.gaussian_blur(r, img))(r) for r in (0.75, 1.0, 1.5, 2.0, 2.5, 4.0)},
        **{f"motion_length_{n_}": (lambda n_: lambda img: kinds.motion_blur(rng, img, length=n_))(n_) for n_ in (5, 7, 9, 11, 15, 21)},
        **{f"upscaled_x{f}": (lambda f: lambda img: kinds.upscaled(rng, img, factor=f))(f) for f in (1.5, 2.0, 3.0, 4.0)},
    }
    out = {}
    for name, apply in defects.items():
        new_hits = old_hits = 0
        for img in sources:
            data = stored(apply(img))
            seen = decode(data, 1024)
            new_hits += new.decide(new.score([Sample("x", "c", data, image=seen)]))[0] is not None
            old_hits += legacy_score(seen)["sharpness"] < LEGACY_MIN_SHARPNESS
        out[name] = {"n": len(sources), "new_caught": round(new_hits / len(sources), 4),
                     "legacy_caught": round(old_hits / len(sources), 4)}
    return out


def clipping_false_rejects(rows: list[dict], truth: dict) -> dict:
    """Share of each clean kind a clipping threshold would reject (why clipping is off by default)."""
    new = technical_filter()
    per_kind: dict[str, list[tuple[float, float]]] = {}
    for r in judged_rows(rows, truth):
        if truth[r["key"]]["expected_reason"] != "":
            continue
        img = decode(r["image"], 512)
        if img is not None:
            s = new.score([Sample(r["key"], "c", r["image"], image=img)])
            per_kind.setdefault(truth[r["key"]]["kind"], []).append((s["clipped_highlights"][0], s["clipped_shadows"][0]))
    out = {}
    for kind, values in sorted(per_kind.items()):
        arr = np.array(values)
        out[kind] = {f"highlights_over_{t}": round(float((arr[:, 0] > t).mean()), 4) for t in CLIP_THRESHOLDS}
        out[kind].update({f"shadows_over_{t}": round(float((arr[:, 1] > t).mean()), 4) for t in CLIP_THRESHOLDS})
    return out


def run(pool: Path, rows: list[dict], limit: int) -> dict:
    truth = json.loads((pool / "ground_truth.json").read_text())["samples"]
    judged = judged_rows(rows, truth)
    result = {"cost": cost(judged, limit)}
    for size, r in result["cost"].items():
        print(f"  cost at {size}: legacy {r['legacy_ms_per_image']:.2f} ms/image, new {r['new_ms_per_image']:.2f}"
              f" ms/image, new/legacy = {r['new_over_legacy']}")
    result["confusion"] = confusion(rows, truth)
    print("  kind                  n  expected   new rejected   legacy rejected   (decode 1024 | 512)")
    big, small = result["confusion"]["decode_1024"], result["confusion"]["decode_512"]
    for kind, c in big.items():
        s = small.get(kind, {})
        print(f"  {kind:18s} {c['n']:4d}  {c['expected']:9s} {c['new_rejected_share']:6.1%} | {s.get('new_rejected_share', 0):6.1%}"
              f"   {c['legacy_rejected_share']:6.1%} | {s.get('legacy_rejected_share', 0):6.1%}")
    result["strength_sweep"] = strength_sweep(rows, truth)
    print("  defect strength (at 512 px long side)  caught: new   legacy")
    for name, r in result["strength_sweep"].items():
        print(f"  {name:36s} {r['new_caught']:6.1%}   {r['legacy_caught']:6.1%}")
    result["clipping_false_rejects"] = clipping_false_rejects(rows, truth)
    worst = {t: max(v[f"shadows_over_{t}"] for v in result["clipping_false_rejects"].values()) for t in CLIP_THRESHOLDS}
    print(f"  clipping: worst clean-kind false-reject share for max_clipped_shadows = t: {worst}")
    return result
