"""Fuzz: mutated image bytes, captions and shards at the readers and the cascade (bounded time)."""
import io
import json
import tarfile
import time

import pyarrow as pa
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from photogenic.pipeline.filtering.cascade import Cascade
from photogenic.pipeline.core.config import Config
from photogenic.pipeline.pool.readers import discover_shards, read_shard
from photogenic.pipeline.core.schema import POOL_SCHEMA, REJECT_REASONS

BUDGET_S = 25  # per test; the two together stay under a minute in CI


def seeds() -> list[bytes]:
    img = Image.fromarray(skimage.data.chelsea()).resize((300, 200))
    out = []
    for fmt in ("JPEG", "PNG", "WEBP", "GIF"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = seeds()


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "zero_header"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "zero_header":
            data[: min(16, len(data))] = b"\x00" * min(16, len(data))
    return bytes(data)


captions = st.one_of(st.none(), st.text(max_size=300), st.text(min_size=3000, max_size=6000),
                     st.binary(max_size=200).map(lambda b: b.decode("latin-1")))

_cascade = None
_start = {}


def cascade() -> Cascade:
    global _cascade
    if _cascade is None:
        _cascade = Cascade(Config())  # every filter available in this build, real models
    return _cascade


def within_budget(name: str) -> bool:
    _start.setdefault(name, time.monotonic())
    return time.monotonic() - _start[name] < BUDGET_S


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.lists(st.tuples(mutated_image(), captions), min_size=1, max_size=4))
def test_cascade_survives_mutated_images_and_captions(items):
    if not within_budget("cascade"):
        return
    rows = [{"key": f"k{i}", "caption": c, "image": d, "source": "s", "shard": "s", "width": None,
             "height": None, "likes": None, "views": None, "meta": None, "read_error": None}
            for i, (d, c) in enumerate(items)]
    out = cascade().process(pa.RecordBatch.from_pylist(rows, schema=POOL_SCHEMA)).to_pylist()
    assert [r["key"] for r in out] == [r["key"] for r in rows]
    for r in out:
        assert r["passed"] or (r["reject_reason"] in REJECT_REASONS and r["reject_detail"])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.lists(st.tuples(mutated_image(), st.binary(max_size=100), st.binary(max_size=100)), min_size=1, max_size=3),
       st.integers(0, 4000))
def test_webdataset_reader_survives_mutated_shards(tmp_path_factory, samples, cut):
    if not within_budget("reader"):
        return
    root = tmp_path_factory.mktemp("fz")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i, (img, txt, js) in enumerate(samples):
            for name, data in ((f"{i:04d}.jpg", img), (f"{i:04d}.txt", txt), (f"{i:04d}.json", js)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    (root / "00000.tar").write_bytes(raw[: len(raw) - cut] if cut < len(raw) else raw)
    rows = [r for b in read_shard(discover_shards(root)[0]) for r in b.to_pylist()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) <= len(samples)
    for r in rows:
        json.loads(r["meta"]) if r["meta"] else None
        assert r["image"] is not None or r["read_error"]
