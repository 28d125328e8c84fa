"""A filter plugin from a folder outside the project, through the real CLI: filter (Spark), report."""
from __future__ import annotations

import io
import json
import os
import re
import sys
import uuid

import duckdb
import pyarrow as pa
import pytest
from PIL import Image

from photogenic.filters import registry
from photogenic.pipeline.core.config import parse_config
from photogenic.pipeline.core.schema import POOL_SCHEMA
from photogenic.pipeline.filtering.cascade import Cascade
from tests.conftest import CHEAP_CONFIG, run_cli
from tests.filters.plugin_source import write_plugin

WORD = "flower"


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    module = f"photogenic_e2e_plugin_{uuid.uuid4().hex[:8]}"
    folder = write_plugin(tmp_path / "outside" / "plugins", module)
    monkeypatch.syspath_prepend(str(folder))
    registry.clear_cache()
    yield folder, module
    sys.modules.pop(module, None)
    registry.clear_cache()


def pool_batch(captions: dict[str, str]) -> pa.RecordBatch:
    image = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(image, "JPEG")
    rows = [{"key": k, "caption": c, "image": image.getvalue(), "source": k, "shard": "s", "width": None,
             "height": None, "likes": None, "views": None, "meta": None, "read_error": None}
            for k, c in captions.items()]
    return pa.RecordBatch.from_pylist(rows, schema=POOL_SCHEMA)


def test_a_filter_crash_on_one_image_makes_that_row_unreadable(plugin_dir):
    _, module = plugin_dir
    config = parse_config({"job": {"plugins": [f"{module}:Crashy"]},
                           "filters": {n: {"enabled": False} for n in ("offensive", "ocr", "clip", "aesthetic",
                                                                       "concepts", "geometry", "technical")}})
    cascade = Cascade(config, filters=[config.registry.get("crashy")()])
    batch = pool_batch({"ok": "a quiet lake", "bad": "boom goes the caption", "ok2": "two words"})
    out = {r["key"]: r for r in cascade.process(batch).to_pylist()}
    assert out["bad"]["reject_reason"] == "unreadable"
    assert out["bad"]["reject_detail"] == "crashy: RuntimeError: boom in caption"
    assert out["bad"]["crashy_len"] is None
    assert (out["ok"]["passed"], out["ok"]["crashy_len"]) == (True, len("a quiet lake"))
    assert out["ok2"]["crashy_len"] == len("two words")


def test_a_filter_must_be_registered_and_declare_its_columns(plugin_dir):
    _, module = plugin_dir
    with pytest.raises(ValueError, match=r"filters \['crashy'\] are not registered in this config"):
        Cascade(parse_config({}), filters=[parse_config({"job": {"plugins": [f"{module}:Crashy"]}}).registry.get("crashy")()])
    config = parse_config({"job": {"plugins": [f"{module}:Undeclared"]}})
    cascade = Cascade(config, filters=[config.registry.get("undeclared")()])
    with pytest.raises(TypeError, match=r"filter 'undeclared' returned columns \['surprise'\] it does not declare"):
        cascade.process(pool_batch({"k": "a caption"}))


@pytest.mark.slow
def test_plugin_filter_through_the_cli_and_spark_to_the_report(plugin_dir, sample_pool, tmp_path):
    folder, module = plugin_dir
    config = tmp_path / "plugin.toml"
    config.write_text(f'[job]\nplugins = ["{module}:WordFilter"]\n'
                      f'[filters.wordy]\nwords = ["{WORD}"]\nmax_len = 200\n' + CHEAP_CONFIG)
    # The plugin lives outside the project: the driver, and through it the local Spark workers, get
    # its folder on PYTHONPATH (on a cluster: install it, or spark.executorEnv.PYTHONPATH).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    run = tmp_path / "run"
    run_cli("filter", "--pool", sample_pool, "--out", run, "--config", config, "--master", "local[2]",
            "--quiet", env=env)

    files = [str(p) for p in sorted((run / "scores").glob("part-*.parquet"))]
    db = duckdb.connect()
    columns = [r[0] for r in db.execute("DESCRIBE SELECT * FROM read_parquet(?)", [files]).fetchall()]
    assert "plugin_caption_len" in columns
    # The plugin is the cheapest filter, so it sees every readable row first (max_len = 200).
    expected, wrong_len = db.execute(
        "SELECT count(*) FILTER ((lower(caption) LIKE ? OR length(caption) > 200) "
        "AND reject_reason <> 'unreadable'), "
        "count(*) FILTER (reject_reason <> 'unreadable' AND plugin_caption_len IS DISTINCT FROM length(caption)) "
        "FROM read_parquet(?)", [f"%{WORD}%", files]).fetchone()
    rejected = db.execute("SELECT count(*) FROM read_parquet(?) WHERE reject_reason = 'plugin_words'",
                          [files]).fetchone()[0]
    assert expected > 0 and rejected == expected and wrong_len == 0
    funnel = json.loads((run / "scores" / "_funnel.json").read_text())
    assert funnel["reject_reasons"]["plugin_words"] == expected

    run_cli("report", "--run", run, env=env)
    html = (run / "report" / "index.html").read_text()
    assert f'data-reason="plugin_words"><td>plugin_words</td><td class="n" data-count="{expected}"' in html
    figure = re.search(r'<figure data-hist="plugin_caption_len".*?</figure>', html, re.S)
    assert figure and "max_len = 200" in figure.group(0)

    # The stages after filter take the plugin run as they take any other.
    run_cli("select", "--run", run, "--config", config, env=env)
    kept = db.execute("SELECT count(*) FROM read_parquet(?) WHERE reject_reason = 'plugin_words'",
                      [[str(p) for p in (run / "candidates").glob("*.parquet")]]).fetchone()[0]
    assert kept == 0


def test_filter_refuses_a_plugin_it_cannot_import(sample_pool, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[job]\nplugins = ["photogenic_not_installed_anywhere:Filter"]\n')
    proc = run_cli("filter", "--pool", sample_pool, "--out", tmp_path / "run", "--config", config, check=False)
    assert proc.returncode != 0
    assert "cannot import module 'photogenic_not_installed_anywhere'" in proc.stderr
    assert not (tmp_path / "run" / "scores").exists()  # refused before anything ran
