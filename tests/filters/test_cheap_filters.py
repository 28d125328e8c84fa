import io

import numpy as np
import skimage.data
from PIL import Image, ImageFilter

from photogenic.filters.base import Sample
from photogenic.filters.caption import CaptionFilter
from photogenic.filters.geometry import GeometryFilter
from photogenic.filters.hashes import PerceptualHashFilter, phash64
from photogenic.filters.technical import TechnicalFilter


def run(f, samples):
    return f.decide(f.score(samples))


def test_caption_rejects_missing_empty_long_and_binary():
    f = CaptionFilter(max_chars=100)
    caps = [None, "", "   ", "x" * 101, "\x00\x01\x02\ufffd\ufffd\ufffd\x03\x04", "a cat on a sofa", "日本の桜の写真"]
    out = run(f, [Sample("k", c, None) for c in caps])
    assert [o is None for o in out] == [False, False, False, False, False, True, True]
    assert out[0] == "missing caption" and "too long" in out[3] and out[4] == "caption is not text"


def test_geometry_uses_header_size_and_thresholds():
    f = GeometryFilter(min_side=256, max_aspect=3.0)
    samples = [Sample("a", "c", None, 1024, 768), Sample("b", "c", None, 200, 800), Sample("c", "c", None, 2000, 500)]
    scores = f.score(samples)
    out = f.decide(scores)
    assert out[0] is None and "short side 200" in out[1] and "aspect 4.00" in out[2]
    assert scores["aspect"][0] == 1024 / 768


def test_sharpness_separates_sharp_from_blurred():
    img = Image.fromarray(skimage.data.astronaut())
    samples = [Sample("s", "c", None, image=img), Sample("b", "c", None, image=img.filter(ImageFilter.GaussianBlur(6)))]
    f = TechnicalFilter()
    scores = f.score(samples)
    assert scores["edge_width"][1] > 2 * scores["edge_width"][0]
    assert f.decide(scores)[0] is None and f.decide(scores)[1].startswith("out of focus")
    legacy = TechnicalFilter(max_edge_width=None, min_sharpness=40)  # the old gate, still available
    assert scores["sharpness"][0] > 10 * scores["sharpness"][1]
    assert legacy.decide(scores)[0] is None and legacy.decide(scores)[1].startswith("sharpness")


def test_phash_is_stable_under_reencode_and_differs_across_images():
    a = Image.fromarray(skimage.data.astronaut())
    buf = io.BytesIO()
    a.resize((400, 400)).save(buf, "JPEG", quality=70)
    a2 = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    c = Image.fromarray(skimage.data.coffee())
    ha, ha2, hc = phash64(a), phash64(a2), phash64(c)
    dist = lambda x, y: bin((x ^ y) & (2**64 - 1)).count("1")  # noqa: E731
    assert dist(ha, ha2) <= 6 < dist(ha, hc)
    assert PerceptualHashFilter().score([Sample("k", "c", None, image=a)])["phash"][0] == ha
    assert np.iinfo(np.int64).min <= ha <= np.iinfo(np.int64).max
