"""Build the sample pool offline: real photographs, planted defects, and a ground-truth file.

Photos come from Debian's `mate-backgrounds` package (nature photographs, fetched with
`apt-get download`, no network beyond Debian's registry) and scikit-image's bundled samples.
Clean images are distinct crops of them; defects are planted on top: text overlays, tiny
images, panoramas, blurred copies, exact and near duplicates, corrupt files, pixel bombs, bad
captions, missing metadata. Issue 11 adds photogenic kinds a focus filter must keep (shallow
depth of field, fog, long exposure, night, flat illustration, mate-backgrounds' gradient art,
minimalism, soft focus) and focus defects it must reject (gaussian blur at three radii, motion
blur, defocus, upscaling, heavy JPEG damage), all flagged `family: focus` in the ground truth
(pipeline/sample/kinds.py makes them). The pool is written in img2dataset's webdataset layout.
"""
from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from photogenic.pipeline.sample import kinds
from photogenic.pipeline.core.runio import mark_success, write_json_atomic
from photogenic.pipeline.core.storage import cache_root

LEGACY_CACHE = Path(".cache/photos")  # where a checkout kept them before; used when it has them
MATE = {  # file -> caption subject (concept keywords are in the subject)
    "nature/Aqua.jpg": "a water drop splashing in a pool",
    "nature/Blinds.jpg": "a green leaf with fine veins, plant detail",
    "nature/Dune.jpg": "dune grass by the sea, a coastal landscape under a blue sky",
    "nature/FreshFlower.jpg": "an orange flower in full bloom",
    "nature/Garden.jpg": "a red marigold flower in a garden",
    "nature/GreenMeadow.jpg": "fresh green grass in a meadow landscape",
    "nature/LadyBird.jpg": "a ladybird insect on a blade of grass",
    "nature/RainDrops.jpg": "rain drops on green leaves of a plant",
    "nature/Storm.jpg": "storm clouds over a field, a moody landscape",
    "nature/TwoWings.jpg": "dandelion seeds in front of orange flowers",
    "nature/Wood.jpg": "weathered wooden planks of an old house",
    "nature/YellowFlower.jpg": "a yellow daisy flower",
    "abstract/Elephants.jpg": "a painting of elephants in blue tones, artwork",
}
SKIMAGE = {  # files bundled inside scikit-image's wheel
    "astronaut.png": "portrait of a smiling woman astronaut in her spacesuit",
    "chelsea.png": "a tabby cat looking up, pet animal",
    "coffee.png": "a cup of coffee on a saucer, food and drink",
    "rocket.jpg": "a rocket on the launch pad, space vehicle",
    "motorcycle_left.png": "a motorcycle parked in a garage, vehicle",
    "hubble_deep_field.jpg": "the night sky full of galaxies",
}
PREFIXES = ["", "photo of ", "a beautiful shot of ", "close-up: ", "my favourite picture: "]
SUFFIXES = ["", ", natural light", ", shallow depth of field", ", high resolution", ", taken last summer"]
WORDS = ("summer sale fifty percent off every item today only visit our shop now free delivery "
         "on orders over twenty dollars limited offer while stocks last").split()
MIN_CLEAN_SHARPNESS = 150.0  # crops flatter than this are not used as "clean" photos


def fetch_mate_backgrounds() -> Path | None:
    """Unpack Debian's mate-backgrounds into the cache (`cache_root()/photos`, or an existing
    `.cache/photos` of the working folder); None if Debian's registry is unreachable."""
    root = LEGACY_CACHE / "mate"
    if not (root / "nature").exists():
        root = cache_root() / "photos" / "mate"
    if (root / "nature").exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", "mate-backgrounds"], cwd=tmp, check=True,
                           capture_output=True, timeout=300)
            deb = next(Path(tmp).glob("mate-backgrounds_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True, capture_output=True)
        except (OSError, subprocess.SubprocessError, StopIteration):
            return None
        src = Path(tmp) / "x/usr/share/backgrounds/mate"
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, root, dirs_exist_ok=True)
    return root


def base_photos() -> list[tuple[str, Image.Image, str]]:
    import skimage.data

    photos = []
    mate = fetch_mate_backgrounds()
    if mate is not None:
        for rel, subject in MATE.items():
            if (mate / rel).exists():
                photos.append((Path(rel).stem, Image.open(mate / rel).convert("RGB"), subject))
    data_dir = Path(skimage.data.__file__).parent
    for name, subject in SKIMAGE.items():
        photos.append((Path(name).stem, Image.open(data_dir / name).convert("RGB"), subject))
    return photos


def legacy_grey(img: Image.Image, long_side: int = 512) -> np.ndarray:
    """The grey decode of the technical filter before issue 11 (bench/technical.py times it)."""
    grey = img.convert("L")
    scale = long_side / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))))
    return np.asarray(grey, dtype=np.float32)


def laplacian_sharpness(img: Image.Image) -> float:
    """The old filter's `sharpness`: how the original clean crops were picked (kept, so those rows
    do not change)."""
    return float(cv2.Laplacian(legacy_grey(img), cv2.CV_32F).var())


def random_crop(rng: random.Random, img: Image.Image) -> Image.Image:
    w, h = img.size
    aspect = rng.choice([1.0, 1.33, 1.5, 1.78, 0.75, 0.67])
    scale = rng.uniform(0.35, 0.9) if min(w, h) > 800 else rng.uniform(0.75, 1.0)
    cw = min(w, int(min(w, h * aspect) * scale))
    ch = min(h, int(cw / aspect))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    short = rng.randint(320, 512)
    factor = short / min(crop.size)
    return crop.resize((max(1, round(crop.width * factor)), max(1, round(crop.height * factor))), Image.Resampling.LANCZOS)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def overlay_text(img: Image.Image, words: list[str], size: int) -> Image.Image:
    """Words on a solid banner, the way ads and memes carry text."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size)
    lines, line = [], []
    for word in words:
        trial = " ".join(line + [word])
        if line and draw.textlength(trial, font=font) > img.width - 40:
            lines.append(" ".join(line))
            line = [word]
        else:
            line.append(word)
    lines.append(" ".join(line))
    height = len(lines) * int(size * 1.4) + 20
    top = (img.height - height) // 2
    draw.rectangle((10, top, img.width - 10, top + height), fill=(255, 255, 255))
    for i, text in enumerate(lines):
        draw.text((24, top + 10 + i * int(size * 1.4)), text, fill=(0, 0, 0), font=font)
    return img


def pixel_bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims a huge image (decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def engagement(rng: random.Random) -> dict[str, int]:
    views = int(rng.lognormvariate(8, 1.5)) + 10
    likes = int(views * min(0.5, rng.betavariate(2, 30)))
    return {"likes": likes, "views": views}


class PoolBuilder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.samples: list[dict[str, Any]] = []
        self.truth: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, image: bytes | None, caption: str | None, expected: str = "",
            ext: str = "jpg", meta: dict | None = None, in_tar: bool = True, **extra: Any) -> str:
        key = f"{len(self.samples):09d}"
        self.samples.append({"key": key, "image": image, "caption": caption, "ext": ext,
                             "meta": meta if meta is not None else engagement(self.rng), "in_tar": in_tar})
        self.truth[key] = {"kind": kind, "expected_reason": expected, **extra}
        return key


def build_sample_pool(out: Path, seed: int = 0, n_clean: int = 400, shard_size: int = 100) -> dict[str, Any]:
    rng = random.Random(seed)
    photos = base_photos()
    b = PoolBuilder(seed)
    clean: list[tuple[str, Image.Image, str]] = []
    attempts = 0
    while len(clean) < n_clean and attempts < n_clean * 20:
        attempts += 1
        name, photo, subject = photos[attempts % len(photos)]
        crop = random_crop(rng, photo)
        if laplacian_sharpness(crop) < MIN_CLEAN_SHARPNESS:
            continue
        caption = f"{rng.choice(PREFIXES)}{subject}{rng.choice(SUFFIXES)}"
        key = b.add("clean", jpeg(crop), caption, source_photo=name)
        clean.append((key, crop, caption))

    pick = lambda: clean[rng.randrange(len(clean))]  # noqa: E731
    for _ in range(12):  # heavy text: ads and memes, 10+ words
        _, img, caption = pick()
        words = WORDS[rng.randrange(0, 6):][: rng.randint(10, 16)]
        b.add("text_heavy", jpeg(overlay_text(img, words, 30)), caption, "ocr", words=len(words), text=" ".join(words))
    for _ in range(8):  # a word or two, e.g. a signature: must pass
        _, img, caption = pick()
        words = rng.sample(["hello", "summer", "garden", "photo", "sunny"], rng.randint(1, 2))
        b.add("text_light", jpeg(overlay_text(img, words, 30)), caption, "", words=len(words), text=" ".join(words))
    for _ in range(10):
        _, img, caption = pick()
        tiny = img.resize((rng.randint(64, 200), rng.randint(48, 150)))
        b.add("tiny", jpeg(tiny), caption, "geometry")
    for _ in range(8):
        _, img, caption = pick()
        w = rng.randint(1400, 2000)
        b.add("panorama", jpeg(img.resize((w, w // rng.randint(4, 6)))), caption, "geometry")
    for _ in range(12):
        src_key, img, caption = pick()
        b.add("blurred", jpeg(img.filter(ImageFilter.GaussianBlur(6))), caption, "technical", copy_of=src_key)
    dup_groups = []
    for _ in range(10):  # exact duplicates: same bytes under another key
        src_key, _, caption = pick()
        data = b.samples[int(src_key)]["image"]
        dup = b.add("exact_dup", data, caption, "", dup_of=src_key)
        dup_groups.append({"type": "exact", "keys": [src_key, dup]})
    for _ in range(10):  # near duplicates: resized and re-encoded
        src_key, img, caption = pick()
        near = img.resize((int(img.width * 0.9), int(img.height * 0.9)))
        dup = b.add("near_dup", jpeg(near, quality=75), caption, "", dup_of=src_key)
        dup_groups.append({"type": "near", "keys": [src_key, dup]})
    _, img, caption = pick()
    whole = jpeg(img)
    b.add("truncated", whole[: len(whole) // 3], caption, "unreadable")
    b.add("empty_file", b"", caption, "unreadable")
    b.add("not_an_image", b"<html><body>404 not found</body></html>", caption, "unreadable")
    b.add("random_bytes", rng.randbytes(5000), caption, "unreadable")
    b.add("pixel_bomb", pixel_bomb_png(), caption, "unreadable", ext="png")
    b.add("missing_image", None, caption, "unreadable", in_tar=False)
    _, img, caption = pick()
    b.add("cmyk_jpeg", jpeg(img.convert("CMYK")), caption, "")
    _, img, caption = pick()
    buf = io.BytesIO()
    img.convert("P", palette=Image.Palette.ADAPTIVE).save(buf, "PNG", transparency=0)
    b.add("palette_png", buf.getvalue(), caption, "", ext="png")
    for kind, cap in [("empty_caption", ""), ("blank_caption", "   \n "), ("huge_caption", "beautiful " * 3000),
                      ("binary_caption", bytes(rng.randrange(256) for _ in range(300)).decode("latin-1")),
                      ("missing_caption", None)]:
        _, img, _ = pick()
        b.add(kind, jpeg(img), cap, "caption")
    _, img, caption = pick()
    b.add("no_metadata", jpeg(img), caption, "", meta={})
    add_focus_kinds(b, photos, clean, seed, n_clean)

    order = list(range(len(b.samples)))
    rng.shuffle(order)  # defects spread over shards
    return write_webdataset_pool(out, [b.samples[i] for i in order], b.truth, dup_groups, shard_size)


CLEAN_FOCUS_KINDS = {  # kind -> (make from a crop, caption phrase)
    "shallow_dof": (kinds.shallow_depth_of_field, "shallow depth of field, blurred background"),
    "fog": (kinds.fog, "in the morning mist"),
    "long_exposure": (kinds.long_exposure, "long exposure"),
    "night": (kinds.night, "at night, low key"),
    "flat_illustration": (kinds.flat_illustration, "flat colour illustration"),
    "minimalism": (kinds.minimalism, "minimal composition, lots of empty space"),
    "soft_focus": (kinds.soft_focus, "soft focus close-up"),
}
LANDSCAPES = {"Dune", "GreenMeadow", "Storm", "Wood", "Garden", "FreshFlower", "YellowFlower", "TwoWings", "RainDrops"}
GAUSSIAN_RADII = (1.5, 2.5, 4.0)  # at the measure scale (512 px long side)
DEFECT_FOCUS_KINDS = {
    "motion_blur": kinds.motion_blur,
    "defocus": kinds.defocus,
    "upscaled": kinds.upscaled,
}


def add_focus_kinds(b: PoolBuilder, photos: list, clean: list, seed: int, n_clean: int) -> None:
    """Photogenic clean kinds (fresh crops of the same photos, and mate-backgrounds' artwork) and
    focus defects (copies of clean rows). Own random stream, so the older kinds stay byte-identical."""
    rng = random.Random(f"focus-kinds-{seed}")
    per_clean, per_defect = max(6, n_clean // 20), max(6, n_clean // 25)

    landscapes = [p for p in photos if p[0] in LANDSCAPES] or photos

    def fresh_crop(kind: str) -> tuple[str, Image.Image, str]:
        sources = landscapes if kind in ("fog", "long_exposure") else photos  # mist over a scene, not a cup
        for _ in range(50):
            name, photo, subject = sources[rng.randrange(len(sources))]
            crop = random_crop(rng, photo)
            if laplacian_sharpness(crop) >= MIN_CLEAN_SHARPNESS:
                break
        return name, crop, subject

    for kind, (make, phrase) in CLEAN_FOCUS_KINDS.items():
        for _ in range(per_clean):
            name, crop, subject = fresh_crop(kind)
            b.add(kind, jpeg(make(rng, crop)), f"{subject}, {phrase}", "", family="focus", source_photo=name)
    mate = fetch_mate_backgrounds()
    artwork = [(rel, subject) for rel, subject in kinds.ARTWORK.items() if mate is not None and (mate / rel).exists()]
    for i in range(per_clean if artwork else 0):
        rel, subject = artwork[i % len(artwork)]
        art = kinds.artwork(rng, mate / rel, lambda img: random_crop(rng, img))
        b.add("gradient_art", jpeg(art), subject, "", family="focus", source_photo=Path(rel).stem)

    def source() -> tuple[str, Image.Image, str]:
        return clean[rng.randrange(len(clean))]

    for i in range(per_defect):
        key, img, caption = source()
        radius = GAUSSIAN_RADII[i % len(GAUSSIAN_RADII)]
        b.add("gaussian_blur", jpeg(kinds.gaussian_blur(radius, img)), caption, "technical", family="focus",
              copy_of=key, radius=radius)
    for kind, make in DEFECT_FOCUS_KINDS.items():
        for _ in range(per_defect):
            key, img, caption = source()
            b.add(kind, jpeg(make(rng, img)), caption, "technical", family="focus", copy_of=key)
    for _ in range(per_defect):
        key, img, caption = source()
        b.add("jpeg_damage", kinds.jpeg_damage(rng, img), caption, "technical", family="focus", copy_of=key)


def write_webdataset_pool(out: Path, samples: list[dict], truth: dict, dup_groups: list, shard_size: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    n_shards = 0
    for start in range(0, len(samples), shard_size):
        shard = samples[start : start + shard_size]
        name = f"{n_shards:05d}"
        with tarfile.open(out / f"{name}.tar", "w") as tf:
            for s in shard:
                if not s["in_tar"]:
                    continue
                members = [(f"{s['key']}.{s['ext']}", s["image"])]
                if s["caption"] is not None:
                    members.append((f"{s['key']}.txt", s["caption"].encode("utf-8", "surrogateescape")))
                if s["meta"]:
                    members.append((f"{s['key']}.json", json.dumps({"key": s["key"], **s["meta"]}).encode()))
                for member, data in members:
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        table = pa.table({
            "key": [s["key"] for s in shard],
            "caption": [s["caption"] for s in shard],
            "status": ["success"] * len(shard),
            "likes": pa.array([s["meta"].get("likes") for s in shard], pa.int64()),
            "views": pa.array([s["meta"].get("views") for s in shard], pa.int64()),
        })
        pq.write_table(table, out / f"{name}.parquet")
        n_shards += 1
    summary = {"rows": len(samples), "shards": n_shards, "samples": truth, "dup_groups": dup_groups,
               "kinds": {k: sum(1 for t in truth.values() if t["kind"] == k) for k in sorted({t["kind"] for t in truth.values()})}}
    write_json_atomic(summary, out / "ground_truth.json")
    mark_success(out)
    return summary
