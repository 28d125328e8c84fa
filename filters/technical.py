"""Technical quality on a small grey decode: is anything in focus, JPEG damage, exposure clipping.

Focus asks whether the image has a sharp region anywhere, not whether it is textured everywhere
(the variance of the Laplacian, kept as `sharpness`, confuses fog, sky, sand, flat art and
shallow depth of field with blur). For every pixel whose edge normal (Sobel gradient) lies
closest to one of four directions, a 9-pixel window along that direction gives the largest
one-pixel step over the window's range of grey levels: 1 for a step edge, about 1/w for an edge
w pixels wide, whatever its contrast, so low-contrast mist and low-key night scenes read like
daylight. Windows whose range is under a noise-adaptive gate are not edges. Per tile of a 4x4
grid and per direction, the ratios are averaged with weight range^2 (the strongest edges speak);
`edge_width` is 1/ratio of the sharpest tile in the weakest direction that has edges, since
motion blur widens only the edges across the motion, and `edge_width_best` the same in the best
direction. Everything is measured at `measure_size` on the long side, area-averaged and never
upscaled, so a picture scores the same whatever size it was stored or decoded at; an upscaled
small image has wide edges at that scale and is caught like a blurred one.

`jpeg_quality` is libjpeg's quality estimated from the luminance quantisation table (heavy
compression leaves crisp block edges, so the focus measure cannot see it). `clipped_highlights`
and `clipped_shadows` are the shares of blown (>= 250) and crushed (<= 5) pixels in the worst
channel. `brightness` and `contrast` (mean and spread of grey) are kept for compatibility.
"""
from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import Field

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample
from photogenic.filters.runtime import LazyModule

cv2 = LazyModule("cv2")  # loaded on first use: the registry imports this module to read its config

WINDOW = 9  # pixels along a direction: wide enough to hold a blurred edge, short enough to stay local
GRID = 4  # tiles per side: the sharpest of 16 regions speaks for the image
MIN_TILE_SHARE = 0.01  # a tile with fewer windows above the gate than this has no edge to judge
MIN_GATE = 8  # grey levels (0-255): below this range a window is flat whatever the noise
NOISE_GATE = 6.0  # ... and below this many noise sigmas it is noise, not an edge
STRIDE = 2  # windows are evaluated on every STRIDE-th line across their direction
CLIP_HIGH, CLIP_LOW = 250, 5  # 8-bit levels counted as blown highlights / crushed shadows

# Standard JPEG luminance quantisation table (ITU T.81 Annex K) in natural order, as Pillow gives it.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


_ALONG_ROWS = np.ones((1, WINDOW), np.uint8)
_ALONG_COLUMNS = np.ones((WINDOW, 1), np.uint8)
_ALONG_DIAGONAL = np.eye(WINDOW, dtype=np.uint8)
_ALONG_ANTIDIAGONAL = np.ascontiguousarray(np.eye(WINDOW, dtype=np.uint8)[::-1])
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def grey_at(image, long_side: int) -> np.ndarray:
    """Grey levels (uint8) with the long side at most `long_side`, area-averaged so any stored or
    decoded size of the same picture gives the same array (up to resampling)."""
    grey = np.asarray(image.convert("L"))
    scale = long_side / max(grey.shape)
    if scale < 1:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian over the whole frame (texture, not focus; kept for compatibility)."""
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    return float(std[0, 0] ** 2)


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's fast noise estimate, in grey levels (0-255), on the central quarter (enough
    pixels for a stable figure at a quarter of the cost)."""
    h, w = grey.shape
    centre = grey[h // 4 : h - h // 4, w // 4 : w - w // 4] if min(h, w) >= 16 else grey
    if min(centre.shape) < 3:
        return 0.0
    response = cv2.filter2D(centre, cv2.CV_16S, _IMMERKAER)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * cv2.norm(response, cv2.NORM_L1) / (6 * response.size))


def _tile_stats(spread: np.ndarray, peak: np.ndarray, normal: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray]:
    """Per tile: sqrt(sum of squared largest steps / sum of squared window ranges) over the
    windows whose range clears the gate and whose centre's edge normal lies along the direction,
    i.e. the step/range ratio averaged with weight range^2 (a quadratic mean: a tile's strongest
    edges speak, windows barely above the noise do not); and the share of such windows.

    All uint8 in OpenCV, tile sums from integral images: exact integer sums, so the result does
    not depend on threads or summation order and reruns are bit-identical."""
    _, gated = cv2.threshold(spread, gate, 255, cv2.THRESH_BINARY)
    gated = cv2.bitwise_and(gated, normal)
    _, ranges = cv2.integral2(cv2.bitwise_and(spread, gated), sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
    _, steepest = cv2.integral2(cv2.bitwise_and(peak, gated), sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
    count = cv2.integral(gated)  # 255 per gated window
    rows, cols = _tile_bounds(spread.shape[0]), _tile_bounds(spread.shape[1])
    ranges, steepest, count = (_tile_totals(t, rows, cols) for t in (ranges, steepest, count))
    ratio = np.sqrt(np.divide(steepest, ranges, out=np.zeros_like(ranges), where=ranges > 0))
    return ratio, count / (255.0 * np.outer(np.diff(rows), np.diff(cols)))


def _tile_totals(integral: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    corners = integral[np.ix_(rows, cols)].astype(np.float64)
    return corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]


def _window_stats(image: np.ndarray, steps: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range of grey levels and largest one-pixel step in each window `kernel` covers."""
    return cv2.subtract(cv2.dilate(image, kernel), cv2.erode(image, kernel)), cv2.dilate(steps, kernel)


def _normals(gx: np.ndarray, gy: np.ndarray, which: tuple[int, ...]) -> list[np.ndarray]:
    """Per pixel, 255 where its edge normal (gradient) is nearest direction `which` of h, v,
    d1 (1, 1), d2 (1, -1); integer arithmetic (tan 22.5 deg ~ 53/128)."""
    ax, ay = np.abs(gx.astype(np.int32)), np.abs(gy.astype(np.int32))
    horizontal, vertical = 128 * ay < 53 * ax, 128 * ax < 53 * ay
    masks = []
    for i in which:
        if i == 0:
            m = horizontal
        elif i == 1:
            m = vertical
        else:
            same_sign = (gx > 0) == (gy > 0)
            m = ~(horizontal | vertical) & (same_sign if i == 2 else ~same_sign)
        masks.append(np.ascontiguousarray(m).view(np.uint8) * np.uint8(255))
    return masks


def focus_measures(grey: np.ndarray) -> dict[str, float | None]:
    """Edge width of the sharpest region (weakest and best direction), edge coverage, noise.

    Windows are evaluated on every STRIDE-th line across their direction (rows for the horizontal
    and both diagonals, columns for the vertical): edges are long, so one line in two sees the
    same widths at half the cost (one in four moved a clean pool image over the threshold)."""
    h, w = grey.shape
    if min(h, w) < GRID * STRIDE + WINDOW:
        return {"edge_width": None, "edge_width_best": None, "edge_coverage": 0.0, "noise": 0.0}
    noise = noise_sigma(grey)
    gate = max(MIN_GATE, NOISE_GATE * noise)
    gx = cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3)
    rows = np.s_[: h - 1 : STRIDE, : w - 1]
    # horizontal, (1, 1) and (1, -1) windows, kept on the same sampled rows of the frame
    across = [_window_stats(grey[:, :-1], cv2.absdiff(grey[:, 1:], grey[:, :-1]), _ALONG_ROWS),
              _window_stats(grey[:-1, :-1], cv2.absdiff(grey[1:, 1:], grey[:-1, :-1]), _ALONG_DIAGONAL),
              _window_stats(grey[:-1, 1:], cv2.absdiff(grey[1:, :-1], grey[:-1, 1:]), _ALONG_ANTIDIAGONAL)]
    normals = _normals(gx[rows], gy[rows], (0, 2, 3))
    stats = [_tile_stats(np.ascontiguousarray(a[rows]), np.ascontiguousarray(b[rows]), normal, gate)
             for (a, b), normal in zip(across, normals)]
    cols = np.s_[: h - 1, : w - 1 : STRIDE]
    vs, vp = _window_stats(grey[:-1, :], cv2.absdiff(grey[1:, :], grey[:-1, :]), _ALONG_COLUMNS)
    stats.append(_tile_stats(np.ascontiguousarray(vs[cols]), np.ascontiguousarray(vp[cols]),
                             _normals(gx[cols], gy[cols], (1,))[0], gate))
    ratios, shares = np.stack([r for r, _ in stats]), np.stack([sh for _, sh in stats])
    judged = shares >= MIN_TILE_SHARE
    best = [float(r[j].max()) for r, j in zip(ratios, judged) if j.any()]
    coverage = float(shares.mean(axis=(1, 2)).sum())  # the four normal bins split the pixels
    if not best:
        return {"edge_width": None, "edge_width_best": None, "edge_coverage": coverage, "noise": noise}
    return {"edge_width": 1.0 / max(min(best), 1e-6), "edge_width_best": 1.0 / max(max(best), 1e-6),
            "edge_coverage": coverage, "noise": noise}


def _tile_bounds(n: int) -> np.ndarray:
    return np.arange(GRID + 1) * n // GRID


def clipping(image) -> tuple[float, float]:
    """Share of pixels with a blown (>= 250) or crushed (<= 5) level, in the worst channel."""
    counts = np.asarray(image.convert("RGB").histogram(), np.float64).reshape(3, 256)
    total = counts[0].sum() or 1.0
    return float(counts[:, CLIP_HIGH:].sum(1).max() / total), float(counts[:, : CLIP_LOW + 1].sum(1).max() / total)


def jpeg_quality(data: bytes | None) -> float | None:
    """Estimated libjpeg quality (1-100) from the luminance table; None if not a baseline JPEG."""
    if not data or data[:2] != b"\xff\xd8":
        return None
    try:
        tables = Image.open(io.BytesIO(data)).quantization
    except Exception:
        return None
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    scale = float(np.mean(np.asarray(tables[0], np.float64) / _STD_LUMA)) * 100  # libjpeg's scale factor
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return float(min(100.0, max(1.0, quality)))


class TechnicalFilter(BaseFilter):
    name: ClassVar[str] = "technical"
    reject_reason: ClassVar[str] = "technical"
    need: ClassVar[Need] = Need.PIXELS
    cost_hint: ClassVar[float] = 6e-3  # bench/filters.py --sections technical, 1024 px decode
    columns: ClassVar[dict[str, pa.DataType]] = {
        "edge_width": pa.float32(),
        "edge_width_best": pa.float32(),
        "edge_coverage": pa.float32(),
        "noise": pa.float32(),
        "jpeg_quality": pa.float32(),
        "clipped_highlights": pa.float32(),
        "clipped_shadows": pa.float32(),
        "sharpness": pa.float32(),
        "brightness": pa.float32(),
        "contrast": pa.float32(),
    }
    histograms: ClassVar[tuple[Histogram, ...]] = (
        Histogram("edge width (px)", "edge_width", (("max_edge_width", "max_edge_width"),)),
        Histogram("edge coverage", "edge_coverage", (("min_edge_coverage", "min_edge_coverage"),)),
        Histogram("jpeg quality", "jpeg_quality", (("min_jpeg_quality", "min_jpeg_quality"),)),
        Histogram("clipped highlights", "clipped_highlights", (("max", "max_clipped_highlights"),)),
        Histogram("clipped shadows", "clipped_shadows", (("max", "max_clipped_shadows"),)),
        Histogram("sharpness", "sharpness", (("min_sharpness", "min_sharpness"),)),
        Histogram("brightness", "brightness", (("min_brightness", "min_brightness"),
                                               ("max_brightness", "max_brightness"))),
        Histogram("contrast", "contrast", (("min_contrast", "min_contrast"),)),
    )

    class Config(FilterConfig):
        # Width in pixels (at measure_size) of the crispest edges of the sharpest region, in their
        # weakest orientation: ~1-2 in focus, 3+ blurred, defocused, shaken or upscaled. None: off.
        max_edge_width: float | None = Field(2.5, gt=0)
        # Images with edges in less than this share of windows (flat colour, fog, empty sky) are not
        # judged for focus: there is nothing to be out of focus.
        min_edge_coverage: float = Field(0.02, ge=0, le=1)
        min_jpeg_quality: float | None = Field(20.0, ge=1, le=100)  # estimated from the quantisation tables
        # Shares of pixels with a blown (>= 250) / crushed (<= 5) channel. Off by default: low-key,
        # high-key and night photographs clip on purpose (bench/filters.py measures the false rejects).
        max_clipped_highlights: float | None = Field(None, ge=0, le=1)
        max_clipped_shadows: float | None = Field(None, ge=0, le=1)
        # Long side of the grey image everything is measured on (never upscaled); fixed so scores compare.
        measure_size: int = Field(512, ge=64)
        # Legacy gates: variance of the Laplacian (texture, not focus: off), mean level and spread.
        min_sharpness: float | None = None
        min_brightness: float = 0.0
        max_brightness: float = 255.0
        min_contrast: float = 0.0

    def __init__(self, max_edge_width: float | None = 2.5, min_edge_coverage: float = 0.02,
                 min_jpeg_quality: float | None = 20.0, max_clipped_highlights: float | None = None,
                 max_clipped_shadows: float | None = None, measure_size: int = 512,
                 min_sharpness: float | None = None, min_brightness: float = 0.0, max_brightness: float = 255.0,
                 min_contrast: float = 0.0):
        self.max_edge_width, self.min_edge_coverage = max_edge_width, min_edge_coverage
        self.min_jpeg_quality, self.measure_size = min_jpeg_quality, measure_size
        self.max_clipped_highlights, self.max_clipped_shadows = max_clipped_highlights, max_clipped_shadows
        self.min_sharpness = min_sharpness
        self.min_brightness, self.max_brightness, self.min_contrast = min_brightness, max_brightness, min_contrast

    @property
    def pixel_size(self) -> int:
        return self.measure_size

    def score(self, samples: list[Sample]) -> dict[str, list]:
        cols: dict[str, list] = {name: [] for name in self.columns}
        for s in samples:
            grey = grey_at(s.image, self.measure_size)
            for name, value in focus_measures(grey).items():
                cols[name].append(value)
            cols["jpeg_quality"].append(jpeg_quality(s.data))
            high, low = clipping(s.image)
            cols["clipped_highlights"].append(high)
            cols["clipped_shadows"].append(low)
            cols["sharpness"].append(sharpness(grey))
            mean, std = cv2.meanStdDev(grey)  # (numpy's std of uint8 goes through float64: 10x slower)
            cols["brightness"].append(float(mean[0, 0]))
            cols["contrast"].append(float(std[0, 0]))
        return cols

    def decide_one(self, row: dict[str, Any]) -> str | None:
        return (self._focus(row) or self._jpeg(row) or self._clipping(row) or self._legacy(row))

    def _focus(self, row: dict[str, Any]) -> str | None:
        width = row["edge_width"]
        if self.max_edge_width is None or width is None or row["edge_coverage"] < self.min_edge_coverage:
            return None  # no edges to judge: flat colour, empty sky, thick fog
        if width > self.max_edge_width:
            return f"out of focus: sharpest edges {width:.2f} px wide > {self.max_edge_width}"
        return None

    def _jpeg(self, row: dict[str, Any]) -> str | None:
        quality = row["jpeg_quality"]
        if self.min_jpeg_quality is not None and quality is not None and quality < self.min_jpeg_quality:
            return f"JPEG damage: quality {quality:.0f} < {self.min_jpeg_quality:g}"
        return None

    def _clipping(self, row: dict[str, Any]) -> str | None:
        if self.max_clipped_highlights is not None and row["clipped_highlights"] > self.max_clipped_highlights:
            return f"blown highlights {row['clipped_highlights']:.1%} > {self.max_clipped_highlights:.1%}"
        if self.max_clipped_shadows is not None and row["clipped_shadows"] > self.max_clipped_shadows:
            return f"crushed shadows {row['clipped_shadows']:.1%} > {self.max_clipped_shadows:.1%}"
        return None

    def _legacy(self, row: dict[str, Any]) -> str | None:
        if self.min_sharpness is not None and row["sharpness"] < self.min_sharpness:
            return f"sharpness {row['sharpness']:.1f} < {self.min_sharpness}"
        if not self.min_brightness <= row["brightness"] <= self.max_brightness:
            return f"brightness {row['brightness']:.0f} outside [{self.min_brightness}, {self.max_brightness}]"
        if row["contrast"] < self.min_contrast:
            return f"contrast {row['contrast']:.1f} < {self.min_contrast}"
        return None
