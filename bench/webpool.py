"""A web-like bench pool: the sample pool's photos remixed into the shape of a web image-text pool.

    python -m bench.webpool [--rows 5000] [--seed 0] [--source sample_pool]   # prints the path

The sample pool is a curated test pool (89% of its rows pass the default cascade); a pool
downloaded from the web with img2dataset (LAION / DataComp CommonPool style) is not: many rows are
small, some have banner aspect ratios, many images carry text, captions are often boilerplate, and
a large share are exact or near duplicates. This module builds such a pool, offline and
deterministically (a seeded RNG, exact quotas per kind), from the photos of the sample pool's
rows that pass the cascade there (read with the project's pool reader), in the same img2dataset
webdataset layout (`NNNNN.tar` of KEY.jpg/KEY.txt/KEY.json plus `NNNNN.parquet`, `_SUCCESS`,
`ground_truth.json` with every row's kind). It is cached under `.cache/bench/`.

Where the mix comes from (approximate; the published figures are for other pools and other
thresholds, and where no figure was found the share is a stated guess):

* small images: DataComp's "basic" filter drops images whose short side is < 200 px. In a
  published walk through a DataComp-large language subset (the `datacomp_large_vie` dataset card
  on Hugging Face) that step removed ~28% of the rows left after the caption step (35.6% -> 25.7%
  of the subset). Our geometry check is stricter (short side < 256), so 30% of base rows get a
  short side in [24, 255]. Approximate.
* odd aspect: the same walk removed ~0.4% of its remaining rows for aspect >= 3 (25.7% -> 25.6%).
  2% of base rows here are banners/panoramas (aspect 3.2-6): a guess above that figure, since
  that subset had already lost its small images, which many banners are.
* text in images: T-MARS (Maini et al. 2023) reports that roughly 40% of LAION images contain
  text that overlaps their caption. How many of those are dominated by text (ads, memes, slides:
  more than a few words, what our OCR check rejects) is not published as such: we split the 40%
  into 20% text-heavy (10-16 words) and 20% text-light (1-2 words). The split is a guess.
* captions: LAION-5B (Schuhmann et al. 2022) dropped alt texts under 5 characters at
  construction, and DataComp's basic filter drops captions under 2 words / 5 characters; in the
  same DataComp-large walk ~64% of the language subset had captions of <= 10 characters or
  <= 3 words. Our caption check rejects only missing / empty / non-text / over-long captions
  (min_words 1), so most short captions pass it. We use 15% boilerplate captions ("IMG_4821.JPG",
  "image", "click to enlarge": they pass) and 3% bad ones (empty, blank, missing, binary junk,
  keyword-stuffed past 2000 characters: they fail). Both shares are guesses within those bounds.
* corrupt downloads: img2dataset writes successful downloads only, so few rows are undecodable;
  0.5% truncated JPEGs is a guess.
* duplicates: Webster et al. 2023 ("On the de-duplication of LAION-2B") find roughly 30% of
  LAION-2B-en to be duplicated (exact or near). 30% of the rows here are copies of base rows:
  10% byte-identical, 20% resized and re-encoded. The exact/near split is a guess.
* the attributes are drawn independently (a small image may also carry text and a boilerplate
  caption), so the planted defects alone reject 1 - 0.68 * 0.80 * 0.97 * 0.995 ~ 47% of base
  rows; other images are photos at web sizes (short side 256-640), aspect 1:1 to 16:9.

Not modelled: language (DataComp's English filter), NSFW, CLIP-score filtering (our default
cascade has no rejecting CLIP threshold), aesthetics (the photos carry no aesthetic ground truth;
bench/filters.py's quality-tuning config sets an aesthetic threshold by the share of rows it keeps
instead). Duplicates are not a filter-stage reject here (select removes them), so they pass or
fail as their originals do.
"""
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path
from typing import Any

from PIL import Image

CACHE = Path(".cache/bench")
VERSION = 1  # bump when the recipe changes: the cache key includes it

# Each base row (before duplication) draws one value per attribute, independently; the shares
# of each attribute sum to 1 and are met exactly (largest-remainder quotas, then shuffled).
MIX: dict[str, dict[str, float]] = {
    "size": {"small": 0.30, "odd_aspect": 0.02, "web": 0.68},
    "text": {"text_heavy": 0.20, "text_light": 0.20, "no_text": 0.60},
    "caption": {"bad_caption": 0.03, "boilerplate_caption": 0.15, "alt_text": 0.82},
    "bytes": {"corrupt": 0.005, "intact": 0.995},
}
# Share of all rows that are copies of base rows.
DUPLICATES: dict[str, float] = {"exact_dup": 0.10, "near_dup": 0.20}


def expected_reason(attrs: dict[str, str]) -> str:
    """The default cascade's verdict on a base row from its planted defects alone (its photo may
    still fail, e.g. the technical check): the first check in cascade order that catches one."""
    if attrs["caption"] == "bad_caption":
        return "caption"
    if attrs["size"] != "web":
        return "geometry"
    if attrs["bytes"] == "corrupt":
        return "unreadable"
    if attrs["text"] == "text_heavy":
        return "ocr"
    return ""


ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16)
BOILERPLATE = ("IMG_{n}.JPG", "DSC{n}", "image", "photo", "click to enlarge", "thumbnail", "untitled-{n}",
               "product image", "Image may contain: outdoor", "view full size", "pic {n}", "{n}.jpg")


def quotas(shares: dict[str, float], n: int) -> dict[str, int]:
    """Exact counts for `n` items (largest remainder), so the mix is the declared one up to rounding."""
    raw = {k: v * n for k, v in shares.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def source_photos(pool: Path, limit: int | None = None) -> list[tuple[Image.Image, str]]:
    """Decoded photos and captions of the pool's rows that pass the cascade there (its ground truth
    says which), read with the project's pool reader; stable order (shard order, then key)."""
    from photogenic.pipeline.pool.readers import discover_shards, read_shard

    truth = json.loads((pool / "ground_truth.json").read_text())["samples"] if (pool / "ground_truth.json").exists() else {}
    out = []
    for spec in discover_shards(pool):
        for batch in read_shard(spec, batch_rows=64):
            for r in batch.to_pylist():
                t = truth.get(r["key"], {})
                if t.get("expected_reason", "") or t.get("kind") in ("exact_dup", "near_dup") or not r["image"]:
                    continue
                try:
                    img = Image.open(io.BytesIO(r["image"]))
                    img = img.convert("RGB")
                except Exception:
                    continue
                if min(img.size) < 256 or not r["caption"]:
                    continue
                out.append((img, r["caption"]))
                if limit and len(out) >= limit:
                    return out
    if not out:
        raise ValueError(f"no usable photos in {pool}")
    return out


def crop_to(rng: random.Random, img: Image.Image, aspect: float, short: int) -> Image.Image:
    """A random crop of `img` at width/height `aspect`, resized so its short side is `short`."""
    w, h = img.size
    cw, ch = (w, int(w / aspect)) if w / aspect <= h else (int(h * aspect), h)
    cw, ch = max(1, min(w, cw)), max(1, min(h, ch))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = img.crop((x, y, x + cw, y + ch))
    factor = short / min(crop.size)
    return crop.resize((max(1, round(crop.width * factor)), max(1, round(crop.height * factor))), Image.Resampling.BILINEAR)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_row(rng: random.Random, attrs: dict[str, str], img: Image.Image, caption: str) -> tuple[bytes, str | None]:
    from photogenic.pipeline.sample.pool import WORDS, overlay_text

    quality = rng.choice((75, 80, 85, 90))
    aspect, short = rng.choice(ASPECTS), rng.randint(256, 640)
    if attrs["size"] == "small":
        short = rng.randint(24, 255)
    elif attrs["size"] == "odd_aspect":
        aspect = rng.uniform(3.2, 6.0) if rng.random() < 0.8 else 1 / rng.uniform(3.2, 6.0)
        short = rng.randint(120, 400)
    pic = crop_to(rng, img, aspect, short)
    if attrs["text"] != "no_text":
        size = max(14, min(pic.size) // 14)
        if attrs["text"] == "text_heavy":
            words = WORDS[rng.randrange(0, 6):][: rng.randint(10, 16)]
        else:
            words = rng.sample(["hello", "summer", "garden", "photo", "sunny", "sale"], rng.randint(1, 2))
        pic = overlay_text(pic, words, size)
    data = _jpeg(pic, quality)
    if attrs["bytes"] == "corrupt":
        data = data[: len(data) // 3]
    if attrs["caption"] == "boilerplate_caption":
        caption = rng.choice(BOILERPLATE).format(n=rng.randint(1000, 9999))
    elif attrs["caption"] == "bad_caption":
        caption = rng.choice([
            "", "   ", None, "\ufffd\ufffd\ufffd\x00\x01\x02" * 8,
            " ".join([caption] * (2100 // max(1, len(caption)) + 2)),  # keyword stuffing past 2000 chars
        ])
    return data, caption


def build_webpool(out: Path, rows: int = 5000, seed: int = 0, source: Path = Path("sample_pool"),
                  shard_size: int = 500, photos: list | None = None) -> dict[str, Any]:
    """Write the pool to `out` (replacing it); returns its ground-truth summary."""
    from photogenic.pipeline.sample.pool import engagement, write_webdataset_pool

    rng = random.Random(seed)
    photos = photos if photos is not None else source_photos(source)
    dup_counts = {k: round(v * rows) for k, v in DUPLICATES.items()}
    n_base = rows - sum(dup_counts.values())
    columns = {}
    for attr, shares in MIX.items():
        values = [v for v, c in quotas(shares, n_base).items() for _ in range(c)]
        rng.shuffle(values)
        columns[attr] = values
    base = []
    for i in range(n_base):
        attrs = {attr: columns[attr][i] for attr in MIX}
        img, caption = photos[rng.randrange(len(photos))]
        data, cap = make_row(rng, attrs, img, caption)
        base.append({"kind": "base", "attrs": attrs, "image": data, "caption": cap})
    copies = []
    for kind, count in sorted(dup_counts.items()):
        for _ in range(count):
            j = rng.randrange(n_base)
            src = base[j]
            data = src["image"]
            if kind == "near_dup" and src["attrs"]["bytes"] != "corrupt":
                img = Image.open(io.BytesIO(data)).convert("RGB")
                f = rng.uniform(0.85, 0.95)
                img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.BILINEAR)
                data = _jpeg(img, rng.choice((70, 75, 80)))
            copies.append({"kind": kind, "attrs": src["attrs"], "image": data, "caption": src["caption"], "of": j})
    everything = base + copies
    order = list(range(len(everything)))
    rng.shuffle(order)  # duplicates interleaved with their originals, as in a crawl
    key_of = {i: f"{pos:09d}" for pos, i in enumerate(order)}
    samples, truth, dup_groups = [], {}, []
    for pos, i in enumerate(order):
        row = everything[i]
        key = key_of[i]
        samples.append({"key": key, "image": row["image"], "caption": row["caption"], "ext": "jpg",
                        "meta": engagement(rng), "in_tar": True})
        truth[key] = {"kind": row["kind"], "expected_reason": expected_reason(row["attrs"]), **row["attrs"]}
        if "of" in row:
            truth[key]["dup_of"] = key_of[row["of"]]
            dup_groups.append({"type": row["kind"].split("_")[0], "keys": [key_of[row["of"]], key]})
    summary = write_webdataset_pool(out, samples, truth, dup_groups, shard_size)
    (out / "mix.json").write_text(json.dumps({"version": VERSION, "seed": seed, "rows": rows, "mix": MIX,
                                              "duplicates": DUPLICATES}, indent=2, sort_keys=True) + "\n")
    return summary


def webpool(rows: int = 5000, seed: int = 0, source: Path = Path("sample_pool"), cache: Path = CACHE) -> Path:
    """The cached pool's path, built on first use."""
    out = cache / f"webpool-v{VERSION}-n{rows}-seed{seed}"
    if not (out / "_SUCCESS").exists():
        build_webpool(out, rows, seed, source)
    return out


def mix_of(pool: Path) -> dict[str, float]:
    """Realised share of each attribute value among base rows, and of duplicates among all rows."""
    truth = json.loads((pool / "ground_truth.json").read_text())["samples"]
    base = [t for t in truth.values() if t["kind"] not in DUPLICATES]
    out = {v: sum(1 for t in base if t[attr] == v) / len(base) for attr, shares in MIX.items() for v in shares}
    out.update({k: sum(1 for t in truth.values() if t["kind"] == k) / len(truth) for k in DUPLICATES})
    out["defects_reject"] = sum(1 for t in base if expected_reason(t)) / len(base)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="sample_pool")
    args = parser.parse_args()
    path = webpool(args.rows, args.seed, Path(args.source))
    print(path)
    print(json.dumps({k: round(v, 4) for k, v in mix_of(path).items()}))


if __name__ == "__main__":
    main()
