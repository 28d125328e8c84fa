"""The shared run-file helpers: publishing a folder, listing committed parquet, SQL quoting,
reading JSON, stale builds."""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core import runio
from photogenic.pipeline.core.runio import (
    CorruptFile, build_name, committed_parquet, publishing, read_json, remove_stale_builds, replace_dir,
    sql_quote,
)


def _siblings(final):
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def test_publishing_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with publishing(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").read_text() == "old" and not (final / "new.txt").exists()
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert _siblings(final) == []


def test_publishing_leaves_nothing_behind_on_an_error(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with publishing(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed mid-build")
    assert [p.name for p in final.iterdir()] == ["old.txt"] and _siblings(final) == []
    with pytest.raises(RuntimeError):
        with publishing(tmp_path / "fresh"):
            raise RuntimeError("first build fails")
    assert not (tmp_path / "fresh").exists() and _siblings(final) == []


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir_with_and_without_an_atomic_swap(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(runio, "_exchange", lambda a, b: False)
    final, tmp = tmp_path / "out", tmp_path / ".out.tmp-1"
    final.mkdir()
    (final / "a").write_text("old")
    tmp.mkdir()
    (tmp / "a").write_text("new")
    replace_dir(tmp, final)
    assert (final / "a").read_text() == "new" and _siblings(final) == []


def test_committed_parquet_skips_temp_and_underscore_names(tmp_path):
    table = pa.table({"x": [1]})
    for rel in ("part-0.parquet", "sub/part-1.parquet", ".part-2.parquet.tmp-ab", "._x.parquet",
                "_dropped/part-0.parquet", ".tmp/part-3.parquet", "_stats/s.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path / rel)
    assert [p.relative_to(tmp_path).as_posix() for p in committed_parquet(tmp_path)] == [
        "part-0.parquet", "sub/part-1.parquet"]
    assert committed_parquet(tmp_path / "missing") == []


@pytest.mark.parametrize("value", ["plain", "it's", "''", "a'b'c", "/run/it's a run/x.parquet", 7])
def test_sql_quote_round_trips_through_duckdb(value):
    with duckdb.connect() as con:  # its own connection: the default one is shared by other tests
        assert con.execute(f"SELECT {sql_quote(value)}").fetchall() == [(str(value),)]


def test_read_json_missing_corrupt_and_strict(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"half": ')
    assert read_json(tmp_path / "bad.json") is None
    with pytest.raises(CorruptFile):
        read_json(tmp_path / "bad.json", strict=True)
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json", strict=True) == {"a": 1}


def test_remove_stale_builds_only_touches_build_names(tmp_path):
    final = tmp_path / "candidates"
    for p in (build_name(final), build_name(final, "old"), tmp_path / ".candidates-keep", final):
        p.mkdir()
    assert remove_stale_builds(final) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".candidates-keep", "candidates"]
