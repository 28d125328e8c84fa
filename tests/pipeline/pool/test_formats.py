"""Each pool format module on its own: discovery, rows, and the bytes of every sample read back
from its `source`, through the module and through the dispatch."""
from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from photogenic.pipeline.core.schema import POOL_SCHEMA
from photogenic.pipeline.pool import folder, parquet, tar
from photogenic.pipeline.pool.base import SourceError
from photogenic.pipeline.pool.formats import BY_KIND, FORMATS
from photogenic.pipeline.pool.readers import discover_shards, read_shard
from photogenic.pipeline.pool.sources import read_source


def _image(color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buf, fmt)
    return buf.getvalue()


IMAGES = {"a": _image((255, 0, 0)), "b": _image((0, 255, 0), "JPEG"), "c": _image((0, 0, 255))}


def _rows(fmt, pool) -> list[dict]:
    return [r for spec in fmt.discover(pool, 2) for r in fmt.read_rows(spec, 10_000_000)]


def _assert_round_trip(fmt, rows: list[dict]) -> None:
    assert {r["key"]: r["image"] for r in rows} == IMAGES
    for r in rows:
        assert set(r) == set(POOL_SCHEMA.names) and r["read_error"] is None
        assert fmt.owns_source(r["source"])
        assert fmt.read_source(r["source"]) == read_source(r["source"]) == r["image"]


def test_tar_rows_and_sources(tmp_path):
    with tarfile.open(tmp_path / "00000.tar", "w") as tf:
        for key, data in IMAGES.items():
            for name, blob in ((f"{key}.png", data), (f"{key}.txt", f"caption {key}".encode()),
                               (f"{key}.json", json.dumps({"likes": 2, "extra": key}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    rows = _rows(tar, tmp_path)
    _assert_round_trip(tar, rows)
    assert {r["caption"] for r in rows} == {"caption a", "caption b", "caption c"}
    assert all(r["likes"] == 2 and json.loads(r["meta"])["extra"] == r["key"] for r in rows)
    assert tar.discover(tmp_path / "00000.tar", 2)[0].kind == "tar"


def test_parquet_rows_and_sources(tmp_path):
    keys = list(IMAGES)
    pq.write_table(pa.table({"key": keys, "image": list(IMAGES.values()), "text": keys}),
                   tmp_path / "pool.parquet", row_group_size=2)
    pq.write_table(pa.table({"key": ["x"]}), tmp_path / "_side.parquet")  # `_` names are not shards
    [spec] = parquet.discover(tmp_path, 2)
    rows = list(parquet.read_rows(spec, 10_000_000))
    _assert_round_trip(parquet, rows)
    assert [r["caption"] for r in rows] == keys
    assert rows[2]["source"].endswith("pool.parquet::row=2")  # in the second row group


def test_folder_rows_and_sources(tmp_path):
    for key, data in IMAGES.items():
        (tmp_path / f"{key}.png").write_bytes(data)
    (tmp_path / "a.txt").write_text("caption a")
    shards = folder.discover(tmp_path, 2)
    assert [len(s.members) for s in shards] == [2, 1]
    rows = _rows(folder, tmp_path)
    _assert_round_trip(folder, rows)
    assert {r["key"]: r["caption"] for r in rows}["a"] == "caption a"
    assert folder.discover(tmp_path / "a.png", 2) == []


def test_the_registry_dispatches_discovery_and_reading(tmp_path):
    assert BY_KIND == {"tar": tar, "parquet": parquet, "folder": folder} and FORMATS[0] is tar
    for key, data in IMAGES.items():
        (tmp_path / f"{key}.png").write_bytes(data)
    batches = [b for s in discover_shards(tmp_path, folder_shard_size=2) for b in read_shard(s)]
    assert all(b.schema.equals(POOL_SCHEMA) for b in batches)
    assert sum(b.num_rows for b in batches) == 3


@pytest.mark.parametrize("source", ["nowhere.png", "shard.tar::a.png", "x.tgz::a.png"])
def test_unreadable_sources_are_source_errors(tmp_path, source):
    with pytest.raises(SourceError):
        read_source(str(tmp_path / source))
