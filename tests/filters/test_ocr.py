"""OCR word count with the real PP-OCR ONNX models (rapidocr_onnxruntime)."""
import importlib.util

import pytest

from photogenic.filters.ocr import OcrFilter, count_words, insert_spaces
from tests.filters.helpers import AD_WORDS, photo, sample, with_text


@pytest.fixture(scope="module")
def ocr():
    f = OcrFilter()  # defaults: max_words 5
    f.setup()
    return f


@pytest.mark.parametrize("name,start,n,size", [
    ("astronaut", 0, 12, 30), ("coffee", 3, 16, 30), ("chelsea", 5, 10, 24), ("rocket", 1, 14, 40),
])
def test_heavy_text_is_rejected_with_a_close_word_count(ocr, name, start, n, size):
    words = AD_WORDS[start:start + n]
    scores = ocr.score([sample(with_text(name, words, size))])
    got = scores["ocr_words"][0]
    assert abs(got - len(words)) <= 0.25 * len(words), (got, len(words), scores["ocr_text"][0])
    assert ocr.decide(scores) == [f"{got} words of text > 5"]
    recognised = set(scores["ocr_text"][0].lower().split())
    assert len(recognised & set(words)) >= len(words) // 2  # it read the words, not only counted blobs


def test_upper_case_lines_at_a_larger_size_are_split_into_words(ocr):
    words = "SUMMER SALE FIFTY PERCENT OFF EVERYTHING IN THE STORE TODAY".split()
    scores = ocr.score([sample(with_text("astronaut", words, 40))])
    assert abs(scores["ocr_words"][0] - len(words)) <= 0.25 * len(words), scores["ocr_text"]


@pytest.mark.parametrize("words", [["hello"], ["summer", "garden"]])
def test_one_or_two_words_pass(ocr, words):
    scores = ocr.score([sample(with_text("chelsea", words))])
    assert scores["ocr_words"][0] == len(words)
    assert scores["ocr_text"][0].split() == words
    assert ocr.decide(scores) == [None]


def test_photos_without_text_pass_and_skip_recognition(ocr, monkeypatch):
    calls = []
    real = ocr.engine.recognise
    monkeypatch.setattr(ocr.engine, "recognise", lambda crops: calls.append(len(crops)) or real(crops))
    scores = ocr.score([sample(photo("chelsea")), sample(photo("astronaut"))])
    assert scores["ocr_words"] == [0, 0]
    assert ocr.decide(scores) == [None, None]
    assert calls == []  # no text boxes, so the recogniser never ran
    # A photo where the detector finds a box (a label on the rocket) is recognised, and still passes.
    scores = ocr.score([sample(photo("rocket")), sample(photo("coffee"))])
    assert calls and ocr.decide(scores) == [None, None]


def test_detection_runs_on_a_downscaled_copy(ocr, monkeypatch):
    seen = []
    real = ocr.engine.detector
    monkeypatch.setattr(ocr.engine, "detector", lambda img: seen.append(img.shape) or real(img))
    big = photo("coffee").resize((1600, 1066))
    ocr.score([sample(big)])
    assert max(seen[0][:2]) == ocr.det_size


def test_word_helpers():
    assert count_words("SALE 50% OFF -- today") == 4
    assert count_words("O") == 0  # a lone letter on a texture is not text
    chars, xs = list("SALEOFF"), [1, 2, 3, 4, 20, 21, 22]
    assert insert_spaces(chars, xs, [(8, 16)]) == "SALE OFF"


def test_paddleocr_engine_is_a_clear_error_or_runs():
    if importlib.util.find_spec("paddleocr") is None:
        with pytest.raises(RuntimeError, match="paddleocr package"):
            OcrFilter(engine="paddleocr")
    else:
        OcrFilter(engine="paddleocr").setup()


@pytest.mark.skipif(importlib.util.find_spec("paddleocr") is None,
                    reason="paddleocr is not installed here (an optional engine; rapidocr is the default)")
def test_paddleocr_engine_reads_text():
    f = OcrFilter(engine="paddleocr")
    scores = f.score([sample(with_text("coffee", AD_WORDS[:12]))])
    assert abs(scores["ocr_words"][0] - 12) <= 3


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown OCR engine"):
        OcrFilter(engine="tesseract")
