"""Issue 11: the technical filter keeps photogenic low-texture images and rejects focus defects.

Per kind, on crops of scikit-image's bundled photographs (the sample pool's own generators, so no
download is needed); the pool-level rates per kind are checked in test_filter_job.py.
"""
import io
import random

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw

from photogenic.filters.base import Sample
from photogenic.filters.technical import TechnicalFilter, clipping, focus_measures, grey_at, jpeg_quality
from photogenic.pipeline.sample import kinds
from photogenic.pipeline.sample.pool import random_crop

PHOTOS = [skimage.data.astronaut, skimage.data.chelsea, skimage.data.coffee, skimage.data.rocket,
          lambda: skimage.data.stereo_motorcycle()[0]]
DEFAULTS = TechnicalFilter.Config().model_dump(exclude={"enabled"})


def crops(n: int, seed: int) -> list[Image.Image]:
    rng = random.Random(seed)
    return [random_crop(rng, Image.fromarray(PHOTOS[i % len(PHOTOS)]())) for i in range(n)]


def stored(img: Image.Image) -> Image.Image:
    """Through JPEG q90, as the pool stores it."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def verdicts(images: list[Image.Image], **overrides) -> list[str | None]:
    f = TechnicalFilter(**{**DEFAULTS, **overrides})
    return f.decide(f.score([Sample(str(i), "c", None, image=stored(img)) for i, img in enumerate(images)]))


def gradient_art(rng: random.Random) -> Image.Image:
    """A smooth two-colour gradient with a few crisp flat shapes (sun, hills), as in poster art."""
    w, h = 640, 427
    top, bottom = np.array([rng.randint(0, 255) for _ in range(3)]), np.array([rng.randint(0, 255) for _ in range(3)])
    ramp = np.linspace(0, 1, h)[:, None, None]
    img = Image.fromarray(np.broadcast_to(top + (bottom - top) * ramp, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    x, y, r = rng.randint(100, 540), rng.randint(60, 200), rng.randint(30, 70)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    draw.polygon([(0, h), (rng.randint(150, 350), rng.randint(250, 330)), (w, h)], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return img


CLEAN_KINDS = {
    "clean": lambda rng, img: img,
    "shallow_dof": kinds.shallow_depth_of_field,
    "fog": kinds.fog,
    "long_exposure": kinds.long_exposure,
    "night": kinds.night,
    "flat_illustration": kinds.flat_illustration,
    "minimalism": kinds.minimalism,
    "soft_focus": kinds.soft_focus,
    "gradient_art": lambda rng, img: gradient_art(rng),
}
DEFECT_KINDS = {
    "gaussian_blur_1.5": lambda rng, img: kinds.gaussian_blur(1.5, img),
    "gaussian_blur_2.5": lambda rng, img: kinds.gaussian_blur(2.5, img),
    "gaussian_blur_4": lambda rng, img: kinds.gaussian_blur(4, img),
    "motion_blur": kinds.motion_blur,
    "defocus": kinds.defocus,
    "upscaled": kinds.upscaled,
}


@pytest.mark.parametrize("kind", CLEAN_KINDS)
def test_clean_kind_passes(kind):
    rng = random.Random(kind)
    made = [CLEAN_KINDS[kind](rng, img) for img in crops(10, seed=11)]
    out = verdicts(made)
    assert out == [None] * len(made), (kind, out)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defect_kind_is_rejected_as_out_of_focus(kind):
    rng = random.Random(kind)
    made = [DEFECT_KINDS[kind](rng, img) for img in crops(10, seed=12)]
    out = verdicts(made)
    assert all(o and o.startswith("out of focus") for o in out), (kind, out)


@pytest.mark.parametrize("angle", [0, 22.5, 45, 67.5, 90, 112.5, 135, 157.5])
def test_motion_blur_is_caught_at_every_angle(angle):
    import cv2

    img = Image.fromarray(skimage.data.astronaut())
    length = 15
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0), (length, length))
    shaken = Image.fromarray(np.clip(cv2.filter2D(np.asarray(img, np.float32), -1, kernel / kernel.sum()), 0, 255).astype(np.uint8))
    assert verdicts([img, shaken]) == [None, verdicts([shaken])[0]] and verdicts([shaken])[0].startswith("out of focus")


def test_same_picture_scores_the_same_at_any_stored_size():
    base = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS)
    widths = [focus_measures(grey_at(base.resize((s, s), Image.Resampling.LANCZOS), 512))["edge_width"]
              for s in (512, 1024, 2048)]
    assert max(widths) / min(widths) < 1.15, widths
    blurred = [focus_measures(grey_at(kinds.gaussian_blur(2.5, base.resize((s, s), Image.Resampling.LANCZOS)), 512))["edge_width"]
               for s in (512, 1024, 2048)]
    assert min(blurred) > 1.3 * max(widths) and max(blurred) / min(blurred) < 1.2, blurred


def test_flat_colour_and_empty_sky_are_not_judged():
    flat = Image.new("RGB", (600, 400), (70, 120, 200))
    sky = Image.fromarray(np.broadcast_to(np.linspace(90, 200, 400)[:, None, None], (400, 600, 3)).astype(np.uint8))
    f = TechnicalFilter(**DEFAULTS)
    scores = f.score([Sample("f", "c", None, image=flat), Sample("s", "c", None, image=sky)])
    assert scores["edge_coverage"][0] == 0 and scores["edge_coverage"][1] < DEFAULTS["min_edge_coverage"]
    assert f.decide(scores) == [None, None]


def test_low_contrast_crisp_edge_reads_as_sharp():
    """A faint but crisp horizon (fog, night): width depends on the edge, not its contrast."""
    arr = np.full((400, 600), 120, np.uint8)
    arr[200:] = 132  # 12 grey levels
    faint = focus_measures(arr)["edge_width"]
    arr[200:] = 220
    strong = focus_measures(arr)["edge_width"]
    assert faint is not None and abs(faint - strong) < 0.1 and faint < 1.5


def test_tiny_and_odd_images_do_not_crash():
    f = TechnicalFilter(**DEFAULTS)
    images = [Image.new("RGB", (1, 1)), Image.new("RGB", (7, 300), (9, 9, 9)), Image.effect_noise((64, 64), 60).convert("RGB")]
    scores = f.score([Sample(str(i), "c", None, image=im) for i, im in enumerate(images)])
    assert len(f.decide(scores)) == 3 and scores["edge_width"][0] is None


def test_jpeg_quality_is_estimated_from_the_tables():
    img = Image.fromarray(skimage.data.coffee())
    for q in (20, 50, 75, 90):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        assert abs(jpeg_quality(buf.getvalue()) - q) <= 1.5
    png = io.BytesIO()
    img.save(png, "PNG")
    assert jpeg_quality(png.getvalue()) is None and jpeg_quality(b"\xff\xd8not a jpeg") is None and jpeg_quality(None) is None


def test_heavy_jpeg_damage_is_rejected_and_normal_compression_is_not():
    img = Image.fromarray(skimage.data.coffee())
    f = TechnicalFilter(**DEFAULTS)
    samples = []
    for q in (5, 75):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        samples.append(Sample(str(q), "c", buf.getvalue(), image=Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    damaged, fine = f.decide(f.score(samples))
    assert damaged.startswith("JPEG damage") and fine is None


def test_clipping_counts_blown_and_crushed_pixels_per_channel():
    arr = np.full((100, 100, 3), 128, np.uint8)
    arr[:10, :, 0] = 255  # 10% blown in red only
    arr[50:80] = 0  # 30% crushed in every channel
    high, low = clipping(Image.fromarray(arr))
    assert high == pytest.approx(0.10) and low == pytest.approx(0.30)
    f = TechnicalFilter(**{**DEFAULTS, "max_clipped_shadows": 0.25})
    assert f.decide(f.score([Sample("a", "c", None, image=Image.fromarray(arr))]))[0].startswith("crushed shadows")
    assert TechnicalFilter(**DEFAULTS).decide(TechnicalFilter(**DEFAULTS).score([Sample("a", "c", None, image=Image.fromarray(arr))])) == [None]
