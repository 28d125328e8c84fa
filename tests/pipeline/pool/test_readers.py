import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from photogenic.pipeline.pool.readers import PoolError, ShardSpec, discover_shards, read_shard
from photogenic.pipeline.pool.sources import read_source


def jpeg_bytes(color=(200, 30, 30), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def rows_of(spec: ShardSpec) -> list[dict]:
    return [r for b in read_shard(spec, batch_rows=2) for r in b.to_pylist()]


def write_tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset_shard_with_sidecar(tmp_path):
    img = jpeg_bytes()
    write_tar(tmp_path / "00000.tar", [
        ("a.jpg", img), ("a.txt", b"a red square"), ("a.json", json.dumps({"likes": 3, "views": 9, "url": "u"}).encode()),
        ("b.png", img), ("b.txt", b"second"),
    ])
    pq.write_table(pa.table({"key": ["a", "b", "c", "d"], "caption": ["x", "y", "lost", "never"],
                             "status": ["success", "success", "success", "failed_to_download"],
                             "likes": [5, 1, 2, None]}), tmp_path / "00000.parquet")
    [spec] = discover_shards(tmp_path)
    assert spec.kind == "tar"
    rows = {r["key"]: r for r in rows_of(spec)}
    assert set(rows) == {"a", "b", "c"}  # d was a failed download, never in the pool
    assert rows["a"]["caption"] == "a red square" and rows["a"]["likes"] == 5 and rows["a"]["views"] == 9
    assert json.loads(rows["a"]["meta"])["url"] == "u"
    assert rows["a"]["image"] == img and read_source(rows["a"]["source"]) == img
    assert rows["c"]["image"] is None and "missing" in rows["c"]["read_error"]


def test_truncated_tar_keeps_every_sidecar_key(tmp_path):
    img = Image.effect_noise((400, 400), 80).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    write_tar(tmp_path / "00000.tar", [(f"{k}.png", buf.getvalue()) for k in "abc"])
    data = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"key": list("abc"), "caption": list("xyz")}), tmp_path / "00000.parquet")
    rows = rows_of(discover_shards(tmp_path)[0])
    assert sorted(r["key"] for r in rows) == ["a", "b", "c"]
    assert any(r["read_error"] for r in rows)


def test_parquet_with_bytes_paths_and_hf_struct(tmp_path):
    img = jpeg_bytes()
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "p.jpg").write_bytes(img)
    pq.write_table(pa.table({"key": ["k1", "k2"], "caption": ["one", "two"], "image": [img, None]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["three"], "path": ["imgs/p.jpg"]}), tmp_path / "b.parquet")
    hf = pa.array([{"bytes": img, "path": None}], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"caption": ["four"], "image": hf}), tmp_path / "c.parquet")
    specs = discover_shards(tmp_path)
    assert [s.kind for s in specs] == ["parquet"] * 3
    a, b, c = (rows_of(s) for s in specs)
    assert a[0]["image"] == img and read_source(a[0]["source"]) == img
    assert a[1]["image"] is None and a[1]["read_error"]
    assert b[0]["caption"] == "three" and b[0]["image"] == img and read_source(b[0]["source"]) == img
    assert c[0]["image"] == img and c[0]["key"] == "c-000000000"


def test_image_folder_with_sidecars(tmp_path):
    img = jpeg_bytes()
    (tmp_path / "sub").mkdir()
    for name in ["x", "sub/y", "z"]:
        (tmp_path / f"{name}.jpg").write_bytes(img)
    (tmp_path / "x.txt").write_text("caption x")
    (tmp_path / "x.json").write_text('{"likes": 7}')
    (tmp_path / "z.json").write_text("{broken")
    specs = discover_shards(tmp_path, folder_shard_size=2)
    assert [s.id for s in specs] == ["folder-00000", "folder-00001"]
    rows = {r["key"]: r for s in specs for r in rows_of(s)}
    assert set(rows) == {"x", "sub/y", "z"}
    assert rows["x"]["caption"] == "caption x" and rows["x"]["likes"] == 7
    assert rows["sub/y"]["caption"] is None
    assert "unparseable" in rows["z"]["meta"]


def test_bad_pool_paths_are_clear_errors(tmp_path):
    with pytest.raises(PoolError, match="not found"):
        discover_shards(tmp_path / "nope")
    with pytest.raises(PoolError, match="no .tar shards"):
        discover_shards(tmp_path)
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(PoolError, match="unsupported"):
        discover_shards(tmp_path / "x.csv")
