"""The export format writers one by one, the format registry, and `[export] formats`."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core.config import Config, ConfigError, parse_config
from photogenic.pipeline.core.config.training import EXPORT_FORMATS, ExportConfig
from photogenic.pipeline.core.summary import read_summary
from photogenic.pipeline.export.samples import Sample
from photogenic.pipeline.export.stage import export_run, verify_export
from photogenic.pipeline.export.writers import open_writers, writer_class
from tests.pipeline.export.fake_run import curated_keys, make_fake_run


def _sample(i: int, split: str) -> Sample:
    return Sample(key=f"k{i}", data=f"image {i}".encode(), record={"key": f"k{i}", "i": i},
                  text=f"caption {i}", split=split, name=f"k{i}", ext="jpg")


SAMPLES = [_sample(i, "validation" if i == 2 else "train") for i in range(5)]


def test_every_known_format_has_a_writer():
    for name in EXPORT_FORMATS:
        assert writer_class(name).format == name
    with pytest.raises(ValueError, match="known formats: webdataset, imagefolder, img2dataset"):
        writer_class("tfrecord")


def test_webdataset_writer_shards_by_split_and_reports_its_tars(tmp_path):
    writer = writer_class("webdataset")(tmp_path, ExportConfig(shard_size=2))
    located = [writer.write(s) for s in SAMPLES]
    report = writer.close()
    assert report.rows == 5
    assert report.files == ["webdataset/train-00000.tar", "webdataset/train-00001.tar",
                            "webdataset/validation-00000.tar", "wids/train.json",
                            "wids/validation.json"]
    wids = json.loads((tmp_path / "wids" / "train.json").read_text())
    assert wids == {"wids_version": 1,
                    "shardlist": [{"url": "../webdataset/train-00000.tar", "nsamples": 2},
                                  {"url": "../webdataset/train-00001.tar", "nsamples": 2}]}
    assert [loc["wds_shard"] for loc in located] == [
        "webdataset/train-00000.tar", "webdataset/train-00000.tar",
        "webdataset/validation-00000.tar", "webdataset/train-00001.tar",
        "webdataset/train-00001.tar"]
    assert located[3]["wds_key"] == "k3"
    with tarfile.open(tmp_path / "webdataset" / "train-00001.tar") as tar:
        assert sorted(tar.getnames()) == ["k3.jpg", "k3.json", "k3.txt", "k4.jpg", "k4.json", "k4.txt"]
        assert {m.mtime for m in tar.getmembers()} == {0}  # reproducible bytes
        assert tar.extractfile("k3.jpg").read() == b"image 3"
        assert json.loads(tar.extractfile("k3.json").read()) == {
            "key": "k3", "i": 3,
            "export": {"image": {"ext": "jpg", "source_ext": "jpg", "transcoded": False}}}


def test_imagefolder_writer_writes_images_and_metadata(tmp_path):
    writer = writer_class("imagefolder")(tmp_path, ExportConfig())
    located = [writer.write(s) for s in SAMPLES]
    report = writer.close()
    assert located[2] == {"file_name": "imagefolder/validation/k2.jpg"}
    assert report.rows == 5 and "imagefolder/train/metadata.jsonl" in report.files
    assert sorted(p for p in report.files if p.endswith(".jpg")) == sorted(
        loc["file_name"] for loc in located)
    lines = (tmp_path / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines][0] == {"file_name": "k0.jpg", "text": "caption 0",
                                                       "key": "k0"}
    assert (tmp_path / "imagefolder" / "validation" / "k2.jpg").read_bytes() == b"image 2"


def test_formats_key_and_the_older_imagefolder_switch():
    assert Config().export.selected_formats == ["webdataset", "imagefolder"]  # not img2dataset
    assert parse_config({"export": {"formats": ["img2dataset"]}}).export.selected_formats == [
        "img2dataset"]
    assert parse_config({"export": {"imagefolder": False}}).export.selected_formats == ["webdataset"]
    only = parse_config({"export": {"formats": ["imagefolder"]}}).export
    assert [w.format for w in open_writers(Path("."), only)] == ["imagefolder"]
    with pytest.raises(ConfigError, match="unknown export format.*'tfrecord'.*known formats: "
                                          "webdataset, imagefolder, img2dataset"):
        parse_config({"export": {"formats": ["webdataset", "tfrecord"]}})
    with pytest.raises(ConfigError, match="no export format left"):
        parse_config({"export": {"formats": ["imagefolder"], "imagefolder": False}})


def test_img2dataset_writer_numbers_keys_like_img2dataset(tmp_path):
    writer = writer_class("img2dataset")(tmp_path, ExportConfig(shard_size=2))
    located = [writer.write(s) for s in SAMPLES]
    report = writer.close()
    assert report.rows == 5
    # shard_size 2: one digit for the sample (img2dataset's ceil(log10(2))), five for the shard.
    assert [loc["i2d_key"] for loc in located] == ["000000", "000001", "000000", "000010",
                                                   "000011"]
    assert located[3]["i2d_shard"] == "img2dataset/train/00001.tar"
    assert report.files == sorted(
        f"img2dataset/{split}/{n:05d}{suffix}" for split, shards in (("train", 2), ("validation", 1))
        for n in range(shards) for suffix in (".tar", ".parquet", "_stats.json"))
    rows = pq.read_table(tmp_path / "img2dataset" / "train" / "00001.parquet").to_pylist()
    assert [(r["key"], r["photogenic_key"], r["caption"]) for r in rows] == [
        ("000010", "k3", "caption 3"), ("000011", "k4", "caption 4")]
    stats = json.loads((tmp_path / "img2dataset" / "validation" / "00000_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 1


def test_export_with_webdataset_only(tmp_path):
    run = make_fake_run(tmp_path)
    config = Config()
    config.export.formats = ["webdataset"]
    out = export_run(run, tmp_path / "exp", config=config).out
    assert not (out / "imagefolder").exists()
    assert (out / "manifest.parquet").exists() and (out / "lineage.json").exists()
    manifest = pq.read_table(out / "manifest.parquet")
    assert "file_name" not in manifest.column_names and "wds_shard" in manifest.column_names
    assert verify_export(out) == []


def test_export_writes_a_stage_summary_outside_the_lineage(tmp_path):
    run = make_fake_run(tmp_path)
    out = export_run(run, tmp_path / "exp").out
    summary = read_summary(out)
    assert summary.stage == "export"
    assert summary.rows_in == len(curated_keys()) + 1  # the key whose file went missing
    assert summary.rows_out == len(curated_keys())
    assert summary.by_reason == {"unreadable_source": 1}
    assert sum(summary.details["splits"].values()) == len(curated_keys())
    assert summary.details["formats"]["webdataset"]["rows"] == len(curated_keys())
    assert summary.config["formats"] == ["webdataset", "imagefolder"]
    lineage = json.loads((out / "lineage.json").read_text())
    assert summary.input_fingerprint == lineage["input_fingerprint"]
    assert "_summary.json" not in lineage["files"]
    assert verify_export(out) == []
