"""OCR word count: images covered in text (ads, memes, screenshots) make poor training images.

PP-OCR through the ONNX models that `rapidocr_onnxruntime` ships. Text detection runs on a
downscaled copy first; recognition runs only on the boxes found, cropped from the larger decode,
so the common case (no text) costs one small detector pass. PP-OCR's recogniser (a Chinese/Latin
model) often drops the spaces between Latin words, so words are also split where a line's ink has
a gap wider than both a share of its height and a multiple of its letter spacing: the recognised
characters are placed on the crop through their CTC columns and spaces re-inserted there.
"""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from photogenic.filters.base import BaseFilter, FilterConfig, Histogram, Need, Sample
from photogenic.filters.runtime import worker_threads

log = logging.getLogger(__name__)

# A gap in a line's ink separates two words when it is wider than both of these. Fitted on PIL's
# default font at 24-56 px, upper and lower case (56 overlays, mean word-count error 2%).
WORD_GAP_INK_RATIO = 0.2  # share of the line's ink height
WORD_GAP_MEDIAN_RATIO = 1.5  # multiple of the line's median gap (letter spacing)
MAX_TEXT_CHARS = 1000


def count_words(text: str) -> int:
    """Tokens with at least one letter or digit (lone punctuation is not a word). A line of a
    single character is ignored: on photos those are mostly textures read as "O" or "I"."""
    if sum(ch.isalnum() for ch in text) < 2:
        return 0
    return sum(1 for tok in text.split() if any(ch.isalnum() for ch in tok))


def crop_quad(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Rectified crop of a (possibly rotated) text box, as PP-OCR does it."""
    import cv2

    quad = quad.astype(np.float32)
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE,
                               flags=cv2.INTER_CUBIC)
    if height / width >= 1.5:  # vertical text: read it rotated, as PP-OCR does
        crop = np.rot90(crop)
    return crop


def word_gaps(crop: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) x-ranges of ink gaps wide enough to separate words in one text line."""
    import cv2

    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = binary > 0
    if ink.mean() > 0.5:  # text is the minority colour, whichever it is
        ink = ~ink
    has_ink = ink.any(axis=0)
    xs = np.flatnonzero(has_ink)
    if len(xs) < 2:
        return []
    rows = np.flatnonzero(ink.any(axis=1))
    ink_height = rows[-1] - rows[0] + 1
    runs, start = [], None
    for x in range(xs[0], xs[-1] + 1):
        if not has_ink[x] and start is None:
            start = x
        elif has_ink[x] and start is not None:
            runs.append((start, x))
            start = None
    if not runs:
        return []
    widths = [b - a for a, b in runs]
    min_gap = max(WORD_GAP_INK_RATIO * ink_height, WORD_GAP_MEDIAN_RATIO * float(np.median(widths)))
    return [(a, b) for (a, b), w in zip(runs, widths) if w >= min_gap]


def insert_spaces(chars: list[str], xs: list[float], gaps: list[tuple[int, int]]) -> str:
    """Join recognised characters, adding a space wherever a word gap lies between two of them."""
    out = []
    for i, ch in enumerate(chars):
        if i and ch != " " and out[-1] != " ":
            if any(xs[i - 1] < (a + b) / 2 < xs[i] for a, b in gaps):
                out.append(" ")
        out.append(ch)
    return "".join(out).strip()


class RapidOcrEngine:
    """PP-OCRv4 det + rec from rapidocr_onnxruntime's bundled ONNX files, driven stage by stage."""

    def __init__(self, det_size: int, min_text_score: float, rec_batch: int = 8):
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
        from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
        from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
        from rapidocr_onnxruntime.utils import read_yaml, update_model_path
        import onnxruntime as ort

        config = update_model_path(read_yaml(DEFAULT_CFG_PATH))
        threads = worker_threads() or -1
        use_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        for part in ("Det", "Rec"):
            config[part].update(intra_op_num_threads=threads, inter_op_num_threads=1 if threads > 0 else -1,
                                use_cuda=use_cuda)
        # "max": never upscale; we hand the detector an image already at det_size.
        config["Det"].update(limit_type="max", limit_side_len=det_size)
        self.detector = TextDetector(config["Det"])
        self.recognizer = TextRecognizer(config["Rec"])
        self.det_size, self.min_text_score, self.rec_batch = det_size, min_text_score, rec_batch

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        """Text boxes (N, 4, 2) in `bgr`'s coordinates, detected on a copy at det_size."""
        import cv2

        h, w = bgr.shape[:2]
        scale = min(1.0, self.det_size / max(h, w))
        small = bgr if scale == 1.0 else cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        boxes, _ = self.detector(small)
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float32)
        boxes = np.asarray(boxes, np.float32) / scale
        return boxes[np.lexsort((boxes[:, 0, 0], boxes[:, 0, 1]))]  # top to bottom, left to right

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text with spaces restored, confidence) per crop."""
        rec = self.recognizer
        decoder = rec.postprocess_op
        _, rec_h, rec_w = rec.rec_image_shape
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = np.argsort([c.shape[1] / c.shape[0] for c in crops])  # similar widths batch together
        for begin in range(0, len(crops), self.rec_batch):
            idx = order[begin:begin + self.rec_batch]
            max_ratio = max([rec_w / rec_h] + [crops[i].shape[1] / crops[i].shape[0] for i in idx])
            batch = np.stack([rec.resize_norm_img(crops[i], max_ratio) for i in idx]).astype(np.float32)
            preds = rec.session(batch)[0]
            padded_w = int(rec_h * max_ratio)
            for j, i in enumerate(idx):
                out[i] = self._decode(preds[j], crops[i], padded_w, decoder)
        return out

    def _decode(self, pred: np.ndarray, crop: np.ndarray, padded_w: int, decoder) -> tuple[str, float]:
        ids, probs = pred.argmax(axis=1), pred.max(axis=1)
        keep = np.ones(len(ids), bool)
        keep[1:] = ids[1:] != ids[:-1]
        keep &= ids != 0  # CTC blank
        cols = np.flatnonzero(keep)
        if not len(cols):
            return "", 0.0
        chars = [decoder.character[k] for k in ids[cols]]
        h, w = crop.shape[:2]
        resized_w = min(padded_w, math.ceil(self.recognizer.rec_image_shape[1] * w / h))
        xs = [(c + 0.5) * padded_w / len(ids) * w / resized_w for c in cols]
        return insert_spaces(chars, xs, word_gaps(crop)), float(probs[cols].mean())

    def read(self, bgr: np.ndarray) -> list[tuple[str, float]]:
        boxes = self.detect(bgr)
        if not len(boxes):
            return []  # most images: no text, no recognition
        lines = self.recognise([crop_quad(bgr, b) for b in boxes])
        return [(t, s) for t, s in lines if t and s >= self.min_text_score]


class PaddleOcrEngine:
    """PaddleOCR's own package, for users who have it and its models; loaded lazily."""

    def __init__(self, det_size: int, min_text_score: float, **_: Any):
        try:
            from paddleocr import PaddleOCR
        except ImportError as err:
            raise RuntimeError(
                "[filters.ocr] engine = \"paddleocr\" needs the paddleocr package and its models "
                f"(pip install paddleocr paddlepaddle), which are not installed here ({err}); "
                "use engine = \"rapidocr\" for the bundled PP-OCR ONNX models"
            ) from None
        self.ocr = PaddleOCR(lang="en")
        self.det_size, self.min_text_score = det_size, min_text_score

    def read(self, bgr: np.ndarray) -> list[tuple[str, float]]:
        import cv2

        h, w = bgr.shape[:2]
        scale = min(1.0, self.det_size / max(h, w))  # PaddleOCR sees the downscaled copy only
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        run = getattr(self.ocr, "predict", None) or self.ocr.ocr  # paddleocr 3 renamed it
        lines = []
        for page in run(bgr) or []:
            if isinstance(page, dict) or hasattr(page, "get"):  # paddleocr >= 3: dict-like results
                lines += list(zip(page.get("rec_texts", []), page.get("rec_scores", [])))
            else:
                lines += [(item[1][0], float(item[1][1])) for item in page or []]
        return [(t, float(s)) for t, s in lines if t and float(s) >= self.min_text_score]


ENGINES = {"rapidocr": RapidOcrEngine, "paddleocr": PaddleOcrEngine}
_ENGINE_CACHE: dict[tuple, Any] = {}  # one model per worker process, shared by all cascades


class OcrFilter(BaseFilter):
    name: ClassVar[str] = "ocr"
    reject_reason: ClassVar[str] = "ocr"
    need: ClassVar[Need] = Need.PIXELS
    # bench/filters.py, cascade stage on the sample pool, one thread, shared 2-core machine: ~300 ms/image
    # (detection on every image, recognition where boxes were found). The costliest pixel filter.
    cost_hint: ClassVar[float] = 0.30
    columns: ClassVar[dict[str, pa.DataType]] = {"ocr_words": pa.int32(), "ocr_text": pa.string()}
    histograms: ClassVar[tuple[Histogram, ...]] = (Histogram("ocr_words", "ocr_words", (("max_words", "max_words"),)),)

    class Config(FilterConfig):
        max_words: int = 5
        engine: Literal["rapidocr", "paddleocr"] = "rapidocr"
        det_size: int = 640  # long side the text detector sees (a downscaled copy)
        rec_size: int = 1024  # long side of the decode that found text boxes are cropped from for recognition
        min_text_score: float = 0.5  # recognised lines below this confidence are ignored
        batch_size: int = 8  # text lines per recognition batch

    @classmethod
    def lineage_models(cls, section: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
        return {"ocr": f"{section.get('engine', 'rapidocr')} {versions.get('rapidocr_onnxruntime', '?')}"}

    def __init__(self, max_words: int = 5, engine: str = "rapidocr", det_size: int = 640, rec_size: int = 1024,
                 min_text_score: float = 0.5, batch_size: int = 8):
        if engine not in ENGINES:
            raise ValueError(f"unknown OCR engine {engine!r}; choose one of {sorted(ENGINES)}")
        self.max_words, self.engine_name = max_words, engine
        self.det_size, self.rec_size = det_size, rec_size
        self.min_text_score, self.batch_size = min_text_score, batch_size
        self.engine = None
        if engine == "paddleocr":  # fail at construction, not in the middle of a Spark job
            import importlib.util

            if importlib.util.find_spec("paddleocr") is None:
                PaddleOcrEngine(det_size, min_text_score)

    @property
    def pixel_size(self) -> int:
        return max(self.det_size, self.rec_size)

    def setup(self) -> None:
        key = (self.engine_name, self.det_size, self.min_text_score, self.batch_size)
        if key not in _ENGINE_CACHE:
            _ENGINE_CACHE[key] = ENGINES[self.engine_name](self.det_size, self.min_text_score,
                                                           rec_batch=self.batch_size)
        self.engine = _ENGINE_CACHE[key]

    def read_image(self, image) -> list[tuple[str, float]]:
        """Recognised lines of one PIL image (RGB)."""
        if self.engine is None:
            self.setup()
        rgb = np.asarray(image.convert("RGB"))
        return self.engine.read(np.ascontiguousarray(rgb[:, :, ::-1]))

    def score(self, samples: list[Sample]) -> dict[str, list]:
        words, texts = [], []
        for s in samples:
            lines = self.read_image(s.image)
            text = "\n".join(t for t, _ in lines)
            words.append(sum(count_words(t) for t, _ in lines))
            texts.append(text[:MAX_TEXT_CHARS] if text else None)
        return {"ocr_words": words, "ocr_text": texts}

    def decide_one(self, row: dict[str, Any]) -> str | None:
        if row["ocr_words"] > self.max_words:
            return f"{row['ocr_words']} words of text > {self.max_words}"
        return None
