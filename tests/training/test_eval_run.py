"""`photogenic eval` on tiny random diffusers models: real generated images, real judges, tables."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from photogenic.pipeline.core.summary import read_summary
from tests.training.eval_fixtures import CATEGORIES, eval_config, eval_out, prompts_file, tiny_models  # noqa: F401
from photogenic.training.eval import EvalError, generate, load_prompts, outcome, run_eval
from photogenic.training.eval_cli import eval_group


def test_eval_tables_come_from_generated_images(eval_out):
    pairs = pq.read_table(eval_out / "pairs.parquet").to_pylist()
    assert len(pairs) == 12
    for row in pairs:
        base = Image.open(eval_out / row["base_image"])
        tuned = Image.open(eval_out / row["tuned_image"])
        assert base.format == tuned.format == "PNG" and base.size == tuned.size == (64, 64)
        # Two different models: the same prompt and seed give different pictures.
        assert not np.array_equal(np.asarray(base), np.asarray(tuned))
        for metric, margin in (("clip_score", 0.002), ("aesthetic_score", 0.05)):
            assert row[f"{metric}_outcome"] == outcome(row[f"tuned_{metric}"], row[f"base_{metric}"], margin)
    results = json.loads((eval_out / "results.json").read_text())
    assert results["pairs"] == 12 and results["prompts"] == 6 and results["seeds"] == [0, 1]
    summary = read_summary(eval_out)  # the one stage-summary shape
    assert (summary.stage, summary.rows_in, summary.rows_out) == ("eval", 12, 12)
    assert summary.details["prompts"] == 6 and summary.input_fingerprint
    for metric in ("clip_score", "aesthetic_score"):
        table = results["tables"][metric]
        assert list(table) == ["all", *CATEGORIES]
        assert table["all"]["n"] == 12 and sum(table[c]["n"] for c in CATEGORIES) == 12
        wins = sum(r[f"{metric}_outcome"] == "win" for r in pairs)
        assert table["all"]["wins"] == wins and table["all"]["win"] == pytest.approx(wins / 12)
        lo, hi = table["all"]["win_ci"]
        assert lo <= wins / 12 <= hi
    # It says the models are tiny/random and the judges meaningless.
    assert results["meaningless"] is True
    assert results["base"]["random_base"] and results["base"]["tiny"] and results["tuned"]["tiny"]
    assert any("tiny" in n and "MEANINGLESS" in n for n in results["notes"])
    assert any("tiny-random" in n for n in results["notes"])


def test_same_seed_same_starting_noise(eval_out, tiny_models, prompts_file, tmp_path):
    base, _, _ = tiny_models
    prompt = load_prompts(prompts_file)[0]
    fingerprint = json.loads((eval_out / "images" / "base" / "_generation.json").read_text())
    made = generate(base, [prompt], [1, 7], tmp_path, eval_config(), "cpu", fingerprint)
    again = np.asarray(Image.open(made[(prompt.id, 1)]), dtype=np.int16)
    original = np.asarray(Image.open(eval_out / "images" / "base" / made[(prompt.id, 1)].name), dtype=np.int16)
    # Same seed: the same picture (alone vs in a batch of six differs by float rounding, <= 1 level).
    assert np.abs(again - original).max() <= 1
    other_seed = np.asarray(Image.open(made[(prompt.id, 7)]), dtype=np.int16)
    assert np.abs(other_seed - original).mean() > 5


def test_rerun_reuses_images_and_refuses_changed_settings(eval_out, tiny_models, prompts_file, tmp_path):
    base, tuned, head = tiny_models
    out = shutil.copytree(eval_out, tmp_path / "eval")
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    before = json.loads((out / "results.json").read_text())["tables"]
    after = run_eval(base, tuned, out, prompts_file, eval_config(aesthetic_head=str(head)))["tables"]
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == stamps
    with pytest.raises(EvalError, match="steps"):
        run_eval(base, tuned, out, prompts_file, eval_config(steps=3, aesthetic_head=str(head)))


def test_cli_runs_eval_as_the_issue_writes_it(eval_out, tiny_models, prompts_file, tmp_path):
    base, tuned, head = tiny_models
    out = shutil.copytree(eval_out, tmp_path / "eval")  # images reused: the CLI path is what is tested
    config = tmp_path / "eval.toml"
    config.write_text(f'[eval]\nseeds = [0, 1]\nsteps = 2\nbatch_size = 6\naesthetic_head = "{head}"\n')
    result = CliRunner().invoke(eval_group, ["--base", str(base), "--tuned", str(tuned), "--prompts",
                                             str(prompts_file), "--out", str(out), "--config", str(config),
                                             "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "MEANINGLESS" in result.output and "clip_score: tuned vs base (12 pairs)" in result.output
    assert "aesthetic_score: tuned vs base" in result.output


def test_cli_errors_are_clear(tiny_models, tmp_path):
    base, _, _ = tiny_models
    missing = CliRunner().invoke(eval_group, ["run", "--base", str(base), "--tuned", str(tmp_path / "nope"),
                                              "--out", str(tmp_path / "o")])
    assert missing.exit_code != 0 and "not a diffusers pipeline directory" in missing.output
    bad_prompts = tmp_path / "bad.tsv"
    bad_prompts.write_text("animals\ta cat\nno tab here\n")
    bad = CliRunner().invoke(eval_group, ["run", "--base", str(base), "--tuned", str(base), "--out",
                                          str(tmp_path / "o"), "--prompts", str(bad_prompts)])
    assert bad.exit_code != 0 and "bad.tsv:2" in bad.output
    usage = CliRunner().invoke(eval_group, ["run", "--base", str(base)])
    assert usage.exit_code == 2 and "--tuned" in usage.output
