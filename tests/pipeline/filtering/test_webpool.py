"""The web-like bench pool (bench/webpool.py): deterministic, its declared mix, the pool layout."""
import hashlib
import json

from bench.webpool import DUPLICATES, MIX, build_webpool, expected_reason, mix_of, quotas, source_photos
from photogenic.pipeline.pool.readers import discover_shards, read_shard
from tests.filters.helpers import CAPTIONS, photo

PHOTOS = [(photo(name), caption) for name, caption in CAPTIONS.items()]


def digests(pool):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(pool.iterdir())
            if p.suffix in (".tar", ".json")}


def test_same_seed_same_bytes_other_seed_other_pool(tmp_path):
    a = build_webpool(tmp_path / "a", rows=80, seed=3, photos=PHOTOS, shard_size=40)
    b = build_webpool(tmp_path / "b", rows=80, seed=3, photos=PHOTOS, shard_size=40)
    c = build_webpool(tmp_path / "c", rows=80, seed=4, photos=PHOTOS, shard_size=40)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert a == b and digests(tmp_path / "a") != digests(tmp_path / "c")


def test_mix_is_the_declared_one(tmp_path):
    rows = 400
    build_webpool(tmp_path / "pool", rows=rows, seed=0, photos=PHOTOS, shard_size=200)
    got = mix_of(tmp_path / "pool")
    n_base = rows - sum(round(v * rows) for v in DUPLICATES.values())
    for attr, shares in MIX.items():
        assert abs(sum(shares.values()) - 1) < 1e-9, attr
        for value, share in shares.items():
            assert abs(got[value] - share) <= 1 / n_base, (value, got[value], share)
    for kind, share in DUPLICATES.items():
        assert abs(got[kind] - share) <= 1 / rows
    # independent attributes: the planted defects reject about 1 - 0.68 * 0.8 * 0.97 * 0.995 of base rows
    assert abs(got["defects_reject"] - (1 - 0.68 * 0.8 * 0.97 * 0.995)) < 0.08


def test_quotas_are_exact_and_sum_to_n():
    assert quotas({"a": 0.5, "b": 0.3, "c": 0.2}, 7) == {"a": 4, "b": 2, "c": 1}
    assert sum(quotas(MIX["caption"], 1234).values()) == 1234


def test_pool_reads_as_an_img2dataset_pool_and_rows_are_what_they_claim(tmp_path):
    from PIL import Image
    import io

    pool = tmp_path / "pool"
    build_webpool(pool, rows=120, seed=1, photos=PHOTOS, shard_size=50)
    assert (pool / "_SUCCESS").exists() and sorted(p.name for p in pool.glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    truth = json.loads((pool / "ground_truth.json").read_text())["samples"]
    rows = [r for spec in discover_shards(pool) for b in read_shard(spec) for r in b.to_pylist()]
    assert len(rows) == 120 and {r["key"] for r in rows} == set(truth)
    by_key = {r["key"]: r for r in rows}
    for key, t in truth.items():
        r = by_key[key]
        if t["bytes"] == "corrupt":
            continue
        img = Image.open(io.BytesIO(r["image"]))
        if t["size"] == "small":
            assert min(img.size) < 256
        elif t["size"] == "odd_aspect":
            assert max(img.size) / min(img.size) > 3
        elif t["kind"] == "base":
            assert min(img.size) >= 256 and max(img.size) / min(img.size) <= 3
        if t["kind"] == "exact_dup":
            assert r["image"] == by_key[t["dup_of"]]["image"]
        assert t["expected_reason"] == expected_reason(t)


def test_source_photos_are_the_sample_pools_passing_rows(sample_pool):
    photos = source_photos(sample_pool, limit=5)
    assert len(photos) == 5 and all(min(img.size) >= 256 and caption for img, caption in photos)
