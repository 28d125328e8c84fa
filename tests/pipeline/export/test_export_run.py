"""`photogenic export` on a tiny real run: formats read by datasets/webdataset, lineage, reruns."""
from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.pipeline.export.fake_run import MISSING_FILE, curated_keys, make_fake_run
from photogenic.pipeline.cli import cli
from photogenic.pipeline.export.stage import (
    ExportError,
    assign_splits,
    export_run,
    safe_name,
    split_of,
    verify_export,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = make_fake_run(tmp_path_factory.mktemp("export"))
    result = CliRunner().invoke(cli, ["export", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert " from pass2 " in result.output  # the default source is the last configured pass
    return run, run / "export"


def _manifest_sources(run: Path) -> dict[str, str]:
    cand = pq.read_table(run / "scores" / "part-pool.parquet").to_pylist()
    return {r["key"]: r["source"] for r in cand}


def test_imagefolder_loads_in_datasets_with_captions(exported):
    import datasets

    run, out = exported
    ds = datasets.load_dataset("imagefolder", data_dir=str(out / "imagefolder"))
    assert set(ds) == {"train", "validation"}
    rows = [r for split in ds.values() for r in split]
    assert {r["key"] for r in rows} == curated_keys()
    captions = {r["key"]: r["text"] for r in rows}
    assert captions["img-astronaut"] == "an astronaut in a white spacesuit holding a helmet"
    assert all(r["image"].size[0] > 0 for r in rows)  # decoded as PIL images
    # The export folder itself works as data_dir too (the tars are not images, so ignored).
    whole = datasets.load_dataset("imagefolder", data_dir=str(out))
    assert sum(len(split) for split in whole.values()) == len(curated_keys())


def test_webdataset_holds_every_curated_key_once(exported):
    import webdataset as wds

    run, out = exported
    shards = sorted(str(p) for p in (out / "webdataset").glob("*.tar"))
    seen = []
    sources = _manifest_sources(run)
    for sample in wds.WebDataset(shards, shardshuffle=False):
        record = json.loads(sample["json"])
        seen.append(record["key"])
        source = Path(sources[record["key"]])
        # One image key for every sample: JPEGs byte for byte, the PNGs encoded as JPEG.
        assert not {"png", "webp"} & set(sample)
        assert (sample["jpg"] == source.read_bytes()) == (source.suffix == ".jpg")
        assert record["export"]["image"] == {"ext": "jpg", "source_ext": source.suffix[1:],
                                             "transcoded": source.suffix != ".jpg"}
        assert sample["txt"].decode() == record["caption"]
        assert record["decision"]["keep"] is True and record["decision"]["votes"] == 3
        assert record["export"]["split"] in ("train", "validation")
        assert "clip_score" in record and "aesthetic_score" in record
    assert sorted(seen) == sorted(curated_keys())
    assert len(seen) == len(set(seen))


def test_png_is_jpg_in_the_tars_and_png_in_the_imagefolder(exported):
    _, out = exported
    names = {m for p in (out / "webdataset").glob("*.tar") for m in tarfile.open(p).getnames()}
    assert "img-colorwheel.jpg" in names and "img-astronaut.jpg" in names
    assert not [n for n in names if n.endswith(".png")]
    assert list((out / "imagefolder").glob("*/img-colorwheel.png"))
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert manifest["img-colorwheel"]["wds_transcoded"] is True
    assert manifest["img-astronaut"]["wds_transcoded"] is False


def test_manifest_and_lineage(exported):
    run, out = exported
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {r["key"] for r in manifest} == curated_keys()
    for r in manifest:
        assert hashlib.sha256((out / r["file_name"]).read_bytes()).hexdigest() == r["image_sha256"]
        assert r["decision_keep"] is True
    # Candidates' extra columns survive even though the first row came from scores/ only.
    by_key = {r["key"]: r for r in manifest}
    assert by_key["img-astronaut"]["engagement"] is None
    assert by_key["img-chelsea"]["engagement"] == 0.5
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["counts"]["pass2"] == {"decided": 12, "kept": 10}
    assert lineage["counts"]["scores"]["rows"] == 12
    assert lineage["counts"]["exported"] == len(curated_keys())
    assert [s["key"] for s in lineage["skipped"]] == [f"img-{MISSING_FILE}"]
    assert "unreadable source" in lineage["skipped"][0]["reason"]
    assert lineage["models"]["meaningless_scores"] == ["clip"]
    assert "pyarrow" in lineage["package_versions"]
    assert "thresholds" in lineage and "export" in lineage["config"]
    files = set(lineage["files"])
    assert "manifest.parquet" in files and any(f.startswith("webdataset/") for f in files)
    assert verify_export(out) == []
    result = CliRunner().invoke(cli, ["export", "--run", str(run), "--verify"])
    assert result.exit_code == 0 and "every file matches" in result.output


def test_lineage_detects_a_changed_file(tmp_path):
    run = make_fake_run(tmp_path)
    out = export_run(run, tmp_path / "exp").out
    victim = next((out / "imagefolder" / "train").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes() + b"x")
    problems = verify_export(out)
    assert problems == [f"sha256 differs: {victim.relative_to(out)}"]
    result = CliRunner().invoke(cli, ["export", "--run", str(run), "--out", str(out), "--verify"])
    assert result.exit_code == 1 and "sha256 differs" in result.output


def test_rerun_skips_and_forced_rebuild_is_identical(tmp_path):
    run = make_fake_run(tmp_path)
    first = export_run(run, tmp_path / "exp")
    before = json.loads((first.out / "lineage.json").read_text())
    assert export_run(run, tmp_path / "exp").skipped_run is True
    rebuilt = export_run(run, tmp_path / "exp", force=True)
    assert rebuilt.skipped_run is False
    after = json.loads((rebuilt.out / "lineage.json").read_text())
    assert after["files"] == before["files"]  # byte-identical files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp.")]  # no temp left


def test_changed_decisions_trigger_a_rebuild(tmp_path):
    import pyarrow as pa

    run = make_fake_run(tmp_path)
    export_run(run, tmp_path / "exp")
    path = run / "review" / "pass2" / "decisions.parquet"
    table = pq.read_table(path)
    keep = [k != "img-astronaut" and v for k, v in zip(table["key"].to_pylist(),
                                                     table["keep"].to_pylist())]
    pq.write_table(table.set_column(1, "keep", pa.array(keep)), path)
    result = export_run(run, tmp_path / "exp")
    assert result.skipped_run is False
    assert result.counts["exported"] == len(curated_keys()) - 1


def test_from_pass1_and_candidates(tmp_path):
    run = make_fake_run(tmp_path)
    pass1 = export_run(run, tmp_path / "p1", stage="pass1")
    # pass1 kept all 12: one file is missing, so 11 exported, including the scores-only key.
    assert pass1.counts["exported"] == 11
    cands = export_run(run, tmp_path / "c", stage="candidates")
    assert cands.counts["exported"] == 10  # 11 candidates, one file missing


def test_missing_decisions_is_a_clear_error(tmp_path):
    run = make_fake_run(tmp_path)
    (run / "review" / "pass2" / "decisions.parquet").unlink()
    result = CliRunner().invoke(cli, ["export", "--run", str(run)])
    assert result.exit_code != 0
    assert "decisions.parquet not found" in result.output
    with pytest.raises(ExportError, match="run directory not found"):
        export_run(tmp_path / "nope")


def test_split_is_deterministic_by_key():
    keys = [f"k{i}" for i in range(2000)]
    splits = assign_splits(keys, 0.1)
    share = sum(v == "validation" for v in splits.values()) / len(keys)
    assert 0.07 < share < 0.13
    assert splits == assign_splits(list(reversed(keys)), 0.1)
    # A key's split does not depend on which other keys are exported.
    assert all(split_of(k, 0.1) == splits[k] for k in keys[:50])
    assert "validation" in assign_splits(["a", "b"], 0.1).values()  # never empty on tiny sets


def test_safe_name_is_unique_and_dot_free():
    assert safe_name("abc_12-3") == "abc_12-3"
    a, b = safe_name("a/b.c"), safe_name("a_b_c")
    assert "." not in a and "/" not in a and a != b


def test_an_unfinished_stage_is_refused(tmp_path):
    run = make_fake_run(tmp_path)
    (run / "review" / "pass2" / "_SUCCESS").unlink()
    with pytest.raises(ExportError, match="unfinished"):
        export_run(run)
    assert not (run / "export").exists()
