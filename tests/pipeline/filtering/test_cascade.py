"""The cascade on hostile and normal input, without Spark."""
import io

import pyarrow as pa
import skimage.data
from PIL import Image

from photogenic.pipeline.filtering.cascade import Cascade
from photogenic.pipeline.core.config import parse_config
from photogenic.pipeline.sample.pool import pixel_bomb_png
from photogenic.pipeline.core.schema import POOL_SCHEMA, REJECT_REASONS, SCORE_SCHEMA

CHEAP = {name: {"enabled": False} for name in ("offensive", "ocr", "clip", "aesthetic", "concepts")}


def encode(img: Image.Image, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def batch(items):
    rows = [{"key": k, "caption": c, "image": d, "source": k, "shard": "s", "width": None, "height": None,
             "likes": None, "views": None, "meta": None, "read_error": e} for k, c, d, e in items]
    return pa.RecordBatch.from_pylist(rows, schema=POOL_SCHEMA)


PHOTO = Image.fromarray(skimage.data.astronaut())


def hostile_batch():
    good = encode(PHOTO)
    return batch([
        ("good", "portrait of an astronaut", good, None),
        ("truncated", "ok caption", good[: len(good) // 3], None),
        ("empty", "ok caption", b"", None),
        ("html", "ok caption", b"<html>nope</html>", None),
        ("bomb", "ok caption", pixel_bomb_png(), None),
        ("bomb2", "ok caption", pixel_bomb_png(12000, 12000), None),
        ("cmyk", "ok caption", encode(PHOTO.convert("CMYK")), None),
        ("i16", "ok caption", encode(Image.fromarray((skimage.data.camera().astype("uint16") * 200)), "PNG"), None),
        ("tiny", "ok caption", encode(PHOTO.resize((40, 40))), None),
        ("huge_caption", "word " * 100_000, good, None),
        ("no_caption", None, good, None),
        ("read_error", "ok caption", None, "too_large: 999 bytes"),
    ])


def test_hostile_input_never_crashes_and_every_row_gets_a_reason():
    cascade = Cascade(parse_config({"filters": CHEAP}))
    out = cascade.process(hostile_batch())
    assert out.schema == SCORE_SCHEMA
    rows = {r["key"]: r for r in out.to_pylist()}
    assert len(rows) == 12
    expect = {"good": "", "truncated": "unreadable", "empty": "unreadable", "html": "unreadable",
              "bomb": "unreadable", "bomb2": "unreadable", "cmyk": "", "i16": "", "tiny": "geometry",
              "huge_caption": "caption", "no_caption": "caption", "read_error": "unreadable"}
    assert {k: r["reject_reason"] for k, r in rows.items()} == expect
    assert "pixel bomb" in rows["bomb"]["reject_detail"] and "pixel bomb" in rows["bomb2"]["reject_detail"]
    for r in rows.values():
        assert r["passed"] == (r["reject_reason"] == "")
        assert r["reject_reason"] in ("",) + REJECT_REASONS
        assert r["passed"] or r["reject_detail"]
    good = rows["good"]
    assert good["width"] == 512 and good["sharpness"] > 40 and good["sha256"] and good["phash"] is not None
    assert good["nsfw_score"] is None and good["clip_score"] is None  # filters that did not run are null


def test_cascade_stops_early_but_score_all_scores_everything():
    items = [("tiny", "ok", encode(PHOTO.resize((40, 40))), None), ("nocap", "", encode(PHOTO), None)]
    stop = Cascade(parse_config({"filters": CHEAP})).process(batch(items)).to_pylist()
    full = Cascade(parse_config({"filters": CHEAP}), score_all=True).process(batch(items)).to_pylist()
    assert stop[0]["sharpness"] is None and stop[1]["width"] is None  # never decoded / never opened
    assert full[0]["sharpness"] is not None and full[1]["sharpness"] is not None
    assert [r["reject_reason"] for r in stop] == [r["reject_reason"] for r in full] == ["geometry", "caption"]


def test_decodes_once_at_the_smallest_needed_size_with_jpeg_draft():
    cascade = Cascade(parse_config({"filters": CHEAP}))
    assert cascade.decode_size == 512
    big = PHOTO.resize((2048, 2048))
    from photogenic.filters.base import Sample

    s = Sample("k", "c", encode(big))
    assert cascade._parse_header(s) is None and (s.width, s.height) == (2048, 2048)
    assert cascade._decode(s) is None
    assert max(s.image.size) == 512  # draft decoded at 1/4 scale, never the full 4 MP
