"""An export of a pool mixing JPEG, PNG (one with transparency) and WebP, read back by the readers
people use: `datasets` (webdataset and imagefolder builders), webdataset's `WebDataset`, wids,
and the img2dataset layout (tar + parquet + _stats.json per shard). Every curated row must come
back, with an image that decodes. Offline: `datasets` caches under a temp folder (conftest.py)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from photogenic.pipeline.core.config import Config
from photogenic.pipeline.export.images import tar_image, to_jpeg
from photogenic.pipeline.export.samples import Sample
from photogenic.pipeline.export.stage import export_run, verify_export
from photogenic.pipeline.export.writers import writer_class
from photogenic.pipeline.core.config.training import ExportConfig
from tests.pipeline.export.fake_run import curated_keys, make_fake_run

# photo -> (format, mode): with fake_run's JPEG and PNG photos, a pool of three formats.
MIXED = {"chelsea": ("WEBP", "RGB"), "rocket": ("WEBP", "RGB"), "coffee": ("PNG", "RGBA"),
         "retina": ("PNG", "L")}
SHARD_SIZE = 3  # several shards per split


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    run = make_fake_run(root, formats=MIXED)
    config = Config()
    config.export.formats = ["webdataset", "imagefolder", "img2dataset"]
    config.export.shard_size = SHARD_SIZE
    out = export_run(run, root / "export", config=config).out
    assert verify_export(out) == []
    return run, out


def _sources(run: Path) -> dict[str, Path]:
    rows = pq.read_table(run / "scores" / "part-pool.parquet").to_pylist()
    return {r["key"]: Path(r["source"]) for r in rows}


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("RGBA", "LA"):
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
            im = flat
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def test_the_pool_really_mixes_formats(mixed):
    run, _ = mixed
    exts = {p.suffix for p in _sources(run).values() if p.exists()}
    assert exts == {".jpg", ".png", ".webp"}


def test_datasets_webdataset_reads_every_row_with_one_image_column(mixed, hf_offline):
    import datasets

    _, out = mixed
    files = {s: str(out / "webdataset" / f"{s}-*.tar") for s in ("train", "validation")}
    ds = datasets.load_dataset("webdataset", data_files=files, cache_dir=str(hf_offline))
    for split in ds.values():
        assert set(split.features) == {"__key__", "__url__", "jpg", "txt", "json"}
        assert isinstance(split.features["jpg"], datasets.Image)
    rows = [r for split in ds.values() for r in split]
    assert sorted(r["json"]["key"] for r in rows) == sorted(curated_keys())
    for r in rows:
        assert r["jpg"] is not None, r["__key__"]
        r["jpg"].load()  # decodes
        assert r["jpg"].size == (r["json"]["width"], r["json"]["height"])
        assert r["txt"] == r["json"]["caption"]
    sources = {r["json"]["key"]: r["json"]["export"]["image"]["source_ext"] for r in rows}
    assert set(sources.values()) == {"jpg", "png", "webp"}
    assert all(r["json"]["export"]["image"]["transcoded"] == (sources[r["json"]["key"]] != "jpg")
               for r in rows)


def test_datasets_imagefolder_reads_every_row_with_the_original_bytes(mixed, hf_offline):
    import datasets

    run, out = mixed
    ds = datasets.load_dataset("imagefolder", data_dir=str(out / "imagefolder"),
                               cache_dir=str(hf_offline))
    rows = [r for split in ds.values() for r in split]
    assert sorted(r["key"] for r in rows) == sorted(curated_keys())
    assert all(r["image"] is not None and r["image"].size[0] > 0 for r in rows)
    # The imagefolder keeps each image as it was in the pool: format and bytes.
    sources = _sources(run)
    for key in curated_keys():
        src = sources[key]
        copies = list((out / "imagefolder").glob(f"*/{key}{src.suffix}"))
        assert len(copies) == 1 and copies[0].read_bytes() == src.read_bytes()
    # The whole export folder works as data_dir too: tars, parquet and json are not rows.
    whole = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(hf_offline))
    assert sum(len(split) for split in whole.values()) == len(curated_keys())


def test_webdataset_reader_jpeg_bytes_kept_others_transcoded_close(mixed):
    import webdataset as wds

    run, out = mixed
    sources = _sources(run)
    shards = sorted(str(p) for p in (out / "webdataset").glob("*.tar"))
    seen = []
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        record = json.loads(sample["json"])
        key = record["key"]
        seen.append(key)
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "txt", "json"}
        with Image.open(io.BytesIO(sample["jpg"])) as im:
            assert im.format == "JPEG"
        src = sources[key].read_bytes()
        if sources[key].suffix == ".jpg":
            assert sample["jpg"] == src and not record["export"]["image"]["transcoded"]
        else:  # quality 95, 4:4:4: close to the original pixels
            assert record["export"]["image"]["transcoded"]
            diff = np.abs(_pixels(sample["jpg"]) - _pixels(src)).mean()
            assert diff < 4.0, (key, diff)
    assert sorted(seen) == sorted(curated_keys())


def test_wids_index_counts_every_sample(mixed, tmp_path):
    _, out = mixed
    total = 0
    for split in ("train", "validation"):
        index = json.loads((out / "wids" / f"{split}.json").read_text())
        assert index["wids_version"] == 1
        listed = [s["url"] for s in index["shardlist"]]
        assert listed == sorted(f"../webdataset/{p.name}"
                                for p in (out / "webdataset").glob(f"{split}-*.tar"))
        for shard in index["shardlist"]:
            with tarfile.open(out / "wids" / shard["url"]) as tar:
                assert shard["nsamples"] == len({m.name.split(".")[0] for m in tar.getmembers()})
            total += shard["nsamples"]
    assert total == len(curated_keys())
    import wids  # in requirements.lock and the [test] extra: this read runs, never skips
    keys = []
    for split in ("train", "validation"):
        ds = wids.ShardListDataset(str(out / "wids" / f"{split}.json"),
                                   cache_dir=str(tmp_path / split))
        for i in range(len(ds)):
            sample = ds[i]
            assert sample[".jpg"].size[0] > 0  # decoded to PIL by wids' default transformation
            keys.append(sample[".json"]["key"])  # decoded by wids too
    assert sorted(keys) == sorted(curated_keys())


def test_img2dataset_layout_has_consistent_shards(mixed, hf_offline):
    import datasets

    _, out = mixed
    photogenic_keys = []
    for split in ("train", "validation"):
        folder = out / "img2dataset" / split
        tars = sorted(folder.glob("*.tar"))
        assert tars and [p.name for p in tars] == [f"{i:05d}.tar" for i in range(len(tars))]
        for tar_path in tars:
            stem = tar_path.stem
            table = pq.read_table(folder / f"{stem}.parquet")
            stats = json.loads((folder / f"{stem}_stats.json").read_text())
            with tarfile.open(tar_path) as tar:
                names = tar.getnames()
                members = {n.split(".", 1)[1] for n in names}
                metas = [json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")]
            keys = sorted({n.split(".")[0] for n in names})
            assert members == {"jpg", "txt", "json"}
            assert len(keys) == table.num_rows == stats["count"] == stats["successes"]
            assert stats["status_dict"] == {"success": table.num_rows}
            assert table.column("key").to_pylist() == keys
            assert all(k.isdigit() and k.startswith(stem) for k in keys)
            assert set(table.column("status").to_pylist()) == {"success"}
            assert [m["key"] for m in metas] == keys
            assert all(m["photogenic"]["key"] == m["photogenic_key"] for m in metas)
            assert table.column("caption").to_pylist() == [m["caption"] for m in metas]
            photogenic_keys += table.column("photogenic_key").to_pylist()
            assert table.num_rows <= SHARD_SIZE
        ds = datasets.load_dataset("webdataset", data_files=str(folder / "*.tar"), split="train",
                                   cache_dir=str(hf_offline))
        assert all(r["jpg"] is not None for r in ds)
    assert sorted(photogenic_keys) == sorted(curated_keys())
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert all(r["i2d_shard"].startswith("img2dataset/") and r["i2d_key"].isdigit() for r in manifest)


def test_datasets_loads_a_json_field_null_in_the_first_samples(tmp_path, hf_offline):
    """jpeg_quality is null for PNG sources and set for JPEGs: with nulls written into the
    json, `datasets` types the column null from the first samples and fails on the first JPEG."""
    import datasets

    writer = writer_class("webdataset")(tmp_path, ExportConfig(shard_size=100))
    for i in range(8):
        png = i < 6
        buf = io.BytesIO()
        Image.new("RGB", (16, 12), (i * 20, 0, 0)).save(buf, "PNG" if png else "JPEG")
        writer.write(Sample(key=f"k{i}", data=buf.getvalue(),
                            record={"key": f"k{i}", "jpeg_quality": None if png else 90.0},
                            text=f"t{i}", split="train", name=f"k{i}", ext="png" if png else "jpg"))
    writer.close()
    ds = datasets.load_dataset("webdataset", data_files=str(tmp_path / "webdataset" / "*.tar"),
                               split="train", cache_dir=str(hf_offline))
    assert len(ds) == 8 and all(r["jpg"] is not None for r in ds)


def test_tar_images_original_keeps_bytes_and_extension(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    sample = Sample(key="k", data=buf.getvalue(), record={"key": "k"}, text="", split="train",
                    name="k", ext="png")
    image = tar_image(sample, ExportConfig(tar_images="original"))
    assert (image.data, image.ext, image.transcoded) == (sample.data, "png", False)
    image = tar_image(sample, ExportConfig())
    assert image.ext == "jpg" and image.transcoded and image.data[:2] == b"\xff\xd8"


def test_transcoding_flattens_transparency_and_is_deterministic():
    im = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    im.paste((0, 0, 0, 0), (0, 0, 4, 8))  # left half transparent
    buf = io.BytesIO()
    im.save(buf, "PNG")
    first = to_jpeg(buf.getvalue(), 95)
    assert first == to_jpeg(buf.getvalue(), 95)
    with Image.open(io.BytesIO(first)) as out:
        left, right = out.convert("RGB").getpixel((1, 4)), out.convert("RGB").getpixel((6, 4))
    assert min(left) > 240  # white, not black
    assert right[2] > 200 and right[0] < 40
    grey16 = io.BytesIO()
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(grey16, "PNG")
    with Image.open(io.BytesIO(to_jpeg(grey16.getvalue(), 95))) as out:
        assert abs(out.getpixel((1, 1)) - 40000 // 256) <= 2  # scaled to 8 bits, not clipped


def test_an_image_that_cannot_be_transcoded_is_a_recorded_skip(tmp_path):
    import hashlib

    import pyarrow as pa

    run = make_fake_run(tmp_path, formats={"colorwheel": ("PNG", "RGB")})
    scores = pq.read_table(run / "scores" / "part-pool.parquet")
    rows = scores.to_pylist()
    for row in rows:
        if row["key"] == "img-colorwheel":
            broken = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
            Path(row["source"]).write_bytes(broken)
            row["sha256"] = hashlib.sha256(broken).hexdigest()
    pq.write_table(pa.Table.from_pylist(rows, schema=scores.schema), run / "scores" / "part-pool.parquet")
    cand = pq.read_table(run / "candidates" / "part-0.parquet").to_pylist()
    for row in cand:
        if row["key"] == "img-colorwheel":
            row["sha256"] = hashlib.sha256(broken).hexdigest()
    pq.write_table(pa.Table.from_pylist(cand), run / "candidates" / "part-0.parquet")
    result = export_run(run, tmp_path / "exp")
    lineage = json.loads((result.out / "lineage.json").read_text())
    skipped = {s["key"]: s["reason"] for s in lineage["skipped"]}
    assert "img-colorwheel" in skipped and "cannot transcode" in skipped["img-colorwheel"]
    assert result.counts["exported"] == len(curated_keys()) - 1
    # Not half-written: neither in the imagefolder nor in the tars.
    assert not list((result.out / "imagefolder").glob("*/img-colorwheel.*"))


def test_photogenic_pool_reader_takes_the_img2dataset_layout_back(mixed):
    """The pool reader (pipeline/pool/tar.py) reads img2dataset output with its parquet
    sidecars: an exported set can be the pool of another run."""
    from photogenic.pipeline.pool.readers import discover_shards, read_shard

    run, out = mixed
    captions = {r["key"]: r["caption"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    rows = []
    for split in ("train", "validation"):
        for spec in discover_shards(out / "img2dataset" / split):
            rows += [r for batch in read_shard(spec) for r in batch.to_pylist()]
    assert len(rows) == len(curated_keys())
    assert all(r["image"] and not r.get("read_error") for r in rows)
    assert sorted(r["caption"] for r in rows) == sorted(captions.values())
