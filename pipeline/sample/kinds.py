"""Photogenic kinds and focus defects for the sample pool, made offline from real images.

Clean kinds are what a texture-everywhere blur measure throws away and Emu-style curation wants
to keep: shallow depth of field, fog and mist, long exposure, night / low key, flat illustration,
gradient art, minimalism and soft-focus close-ups. Defect kinds are what a focus filter must
catch: gaussian blur at several radii, motion blur, a defocus disk, upscaling from a small image
and heavy JPEG damage. Every function is deterministic given its `random.Random`.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

# Artwork in Debian's mate-backgrounds (already fetched for the photos): gradients, flat shapes,
# soft light. Transparent ones are laid on a plain colour as a desktop would.
ARTWORK = {
    "abstract/Flow.png": "abstract flowing ribbons, digital artwork",
    "abstract/Gulp.png": "a minimal gradient artwork with soft shapes",
    "abstract/Silk.png": "smooth silk waves, abstract art",
    "abstract/Spring.png": "an abstract spring pattern, illustration",
    "abstract/Waves.png": "abstract waves in soft colours, artwork",
    "desktop/Float-into-MATE.png": "a floating abstract shape, illustration",
    "desktop/GreenTraditional.jpg": "a green gradient with a simple round emblem, minimal artwork",
    "desktop/Stripes.png": "soft grey stripes, abstract art",
    "desktop/MATE-Stripes-Light.png": "light stripes, abstract pattern art",
    "abstract/Arc-Colors-Transparent-Wallpaper.png": "colourful arcs, flat illustration",
}


def to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def blend(a: np.ndarray, b: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    alpha = alpha[..., None] if isinstance(alpha, np.ndarray) and alpha.ndim == 2 else alpha
    return a * (1 - alpha) + b * alpha


def detail_map(img: Image.Image) -> np.ndarray:
    """Local detail (smoothed Laplacian energy): where a photographer's subject would be in focus."""
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    return cv2.GaussianBlur(cv2.Laplacian(grey, cv2.CV_32F) ** 2, (0, 0), max(grey.shape) / 16)


def most_detailed_point(img: Image.Image, margin: float = 0.2) -> tuple[int, int]:
    detail = detail_map(img)
    h, w = detail.shape
    my, mx = int(h * margin), int(w * margin)
    inner = detail[my : h - my, mx : w - mx]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return y + my, x + mx


def ellipse_mask(h: int, w: int, centre: tuple[float, float], area: float, feather: float) -> np.ndarray:
    """1 inside an ellipse covering about `area` of the frame, 0 outside, `feather` px soft edge."""
    ry, rx = np.sqrt(area / np.pi) * h, np.sqrt(area / np.pi) * w
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.sqrt(((yy - centre[0]) / ry) ** 2 + ((xx - centre[1]) / rx) ** 2)
    return np.clip((1 - dist) * min(rx, ry) / max(feather, 0.5) + 0.5, 0, 1).astype(np.float32)


def detailed_half_first(img: Image.Image) -> bool:
    """True when the top half holds more detail than the bottom half."""
    detail = detail_map(img)
    return float(detail[: detail.shape[0] // 2].sum()) > float(detail[detail.shape[0] // 2 :].sum())


# -- clean kinds ------------------------------------------------------------------------------


def shallow_depth_of_field(rng: random.Random, img: Image.Image) -> Image.Image:
    """A sharp subject (a tenth to a quarter of the frame, where the detail is) before a strongly
    blurred background, the focus falling off over a few pixels."""
    sharp = to_array(img)
    background = to_array(img.filter(ImageFilter.GaussianBlur(rng.uniform(5, 10))))
    mask = ellipse_mask(*sharp.shape[:2], most_detailed_point(img), rng.uniform(0.1, 0.25), feather=6)
    return to_image(blend(background, sharp, mask))


def fog(rng: random.Random, img: Image.Image) -> Image.Image:
    """Mist: a pale veil, thicker with distance (towards the top), far detail softened."""
    if detailed_half_first(img):  # the detailed part is the near one, under the thinnest veil
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    arr = to_array(img)
    h = arr.shape[0]
    haze = np.array([rng.uniform(200, 235)] * 3, np.float32) + np.array([0, 3, 8], np.float32)
    far = to_array(img.filter(ImageFilter.GaussianBlur(1.5)))
    depth = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] * np.ones(arr.shape[1], np.float32)
    arr = blend(arr, far, depth)
    thickness = rng.uniform(0.55, 0.75)
    alpha = np.clip(thickness - 0.25 + 0.35 * depth, 0, 0.9)
    return to_image(blend(arr, np.broadcast_to(haze, arr.shape), alpha))


def long_exposure(rng: random.Random, img: Image.Image) -> Image.Image:
    """Silky water or streaked clouds: one part smeared along one direction, the rest crisp."""
    arr = to_array(img)
    h, w = arr.shape[:2]
    length = rng.randint(25, 45)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    smooth = cv2.filter2D(cv2.GaussianBlur(arr, (0, 0), 2), -1, kernel, borderType=cv2.BORDER_REFLECT)
    split = rng.uniform(0.45, 0.6)
    ramp = np.clip((np.arange(h, dtype=np.float32) / h - split) / 0.04, 0, 1)[:, None] * np.ones(w, np.float32)
    if not detailed_half_first(img):
        ramp = 1 - ramp  # the detailed half (rocks, a shore) stays crisp, the other half is smoothed
    return to_image(blend(arr, smooth, ramp))


def night(rng: random.Random, img: Image.Image) -> Image.Image:
    """Low key: deep shadows, a dim scene, sensor noise."""
    arr = to_array(img) / 255.0
    arr = arr ** rng.uniform(1.8, 2.6) * rng.uniform(0.35, 0.55) * 255
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 1.5, arr.shape[:2])[..., None]
    return to_image(arr * np.array([0.85, 0.9, 1.1], np.float32) + noise)


def flat_illustration(rng: random.Random, img: Image.Image) -> Image.Image:
    """A flat-colour illustration traced from a photo: a few colours, crisp region borders."""
    smooth = img.filter(ImageFilter.MedianFilter(7)).filter(ImageFilter.ModeFilter(5))
    flat = smooth.quantize(colors=rng.randint(5, 9), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return flat.convert("RGB").filter(ImageFilter.ModeFilter(3))


def artwork(rng: random.Random, path: Path, crop_of) -> Image.Image:
    """A crop of one of mate-backgrounds' artworks, transparent ones laid on a plain colour."""
    art = Image.open(path)
    if art.mode in ("RGBA", "LA", "P"):
        base = Image.new("RGB", art.size, tuple(rng.randint(40, 120) for _ in range(3)))
        base.paste(art.convert("RGBA"), mask=art.convert("RGBA").getchannel("A"))
        art = base
    return crop_of(art.convert("RGB"))


def minimalism(rng: random.Random, img: Image.Image) -> Image.Image:
    """A small sharp subject in a wide, smooth field of colour (sky, sand, a wall)."""
    arr = to_array(img)
    h, w = arr.shape[:2]
    top, bottom = arr[: h // 4].reshape(-1, 3).mean(0), arr[-h // 4 :].reshape(-1, 3).mean(0)
    field = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] * (bottom - top) + top
    field = np.broadcast_to(field, arr.shape).copy()
    sub = rng.uniform(0.2, 0.3)
    sh, sw = int(h * sub), int(w * sub)
    cy, cx = most_detailed_point(img, margin=sub / 2)
    subject = arr[cy - sh // 2 : cy - sh // 2 + sh, cx - sw // 2 : cx - sw // 2 + sw]
    y, x = int(rng.choice([1 / 3, 2 / 3]) * h) - sh // 2, int(rng.choice([1 / 3, 2 / 3]) * w) - sw // 2  # thirds
    mask = ellipse_mask(sh, sw, (sh / 2, sw / 2), area=0.6, feather=1)  # a crisp silhouette
    field[y : y + sh, x : x + sw] = blend(field[y : y + sh, x : x + sw], subject, mask)
    return to_image(field)


def soft_focus(rng: random.Random, img: Image.Image) -> Image.Image:
    """A soft-focus (Orton-style) close-up: a sharp image under a glowing blurred copy of itself."""
    sharp = to_array(img)
    glow = to_array(img.filter(ImageFilter.GaussianBlur(rng.uniform(4, 8))))
    glow = np.maximum(glow, sharp) * 1.03
    return to_image(blend(sharp, glow, rng.uniform(0.4, 0.6)))


# -- defect kinds (all rejected `technical`) --------------------------------------------------
# Strengths are in pixels of the technical filter's measure scale (512 on the long side), so a
# defect is as strong on a large image as on a small one.
MEASURE_SIDE = 512


def measure_scale(img: Image.Image) -> float:
    return max(1.0, max(img.size) / MEASURE_SIDE)


def gaussian_blur(radius: float, img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius * measure_scale(img)))


def motion_blur(rng: random.Random, img: Image.Image, length: int | None = None) -> Image.Image:
    """Camera shake: a straight streak 11-21 px long (or `length`) at a random angle."""
    length = round((length or rng.randint(11, 21)) * measure_scale(img)) | 1
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    kernel /= kernel.sum()
    return to_image(cv2.filter2D(to_array(img), -1, kernel, borderType=cv2.BORDER_REFLECT))


def defocus(rng: random.Random, img: Image.Image) -> Image.Image:
    """An out-of-focus lens: convolution with a disk (the aperture), radius 3-6 px."""
    radius = round(rng.uniform(3, 6) * measure_scale(img))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)).astype(np.float32)
    kernel /= kernel.sum()
    return to_image(cv2.filter2D(to_array(img), -1, kernel, borderType=cv2.BORDER_REFLECT))


def upscaled(rng: random.Random, img: Image.Image, factor: float | None = None) -> Image.Image:
    """A thumbnail blown back up 3-5x (or `factor`x, at the measure scale) to the original size."""
    factor = 1 / ((factor or rng.uniform(3, 5)) * measure_scale(img))
    small = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.Resampling.LANCZOS)
    return small.resize(img.size, Image.Resampling.BICUBIC)


def jpeg_damage(rng: random.Random, img: Image.Image) -> bytes:
    """Re-encoded at quality 3-8: blocks and ringing everywhere."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(3, 8))
    return buf.getvalue()
