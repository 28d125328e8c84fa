"""Three review passes configured with [[review.passes]], each pushed, answered by SIMULATED
annotators and pulled through the real CLI against the real Label Studio of the test session:
every pass reviews the previous pass's keeps, counts shrink, each pass writes its decisions and
stage summary, and `photogenic export --from final` exports the last pass's keeps."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from photogenic.pipeline.cli import cli
from photogenic.pipeline.core.layout import RunDir
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import make_fake_run, write_config

pytest_plugins = ["tests.annotation.helpers"]
pytestmark = pytest.mark.slow

N_CANDIDATES = 60
PASSES = """
[[review.passes]]
name = "broad"
rule = "any"
overlap_annotators = 2
overlap_fraction = 0.1

[[review.passes]]
name = "specialist"
label_config = "keep"
rule = "majority"
overlap_annotators = 3
overlap_fraction = 1.0

[[review.passes]]
name = "final"
input = "specialist"
rule = "majority"
overlap_annotators = 3
overlap_fraction = 1.0
min_mean_rating = 3.0
"""
# How to choose each pass on the command line (a name or the 1-based number), and the share of
# keep votes its simulated annotators aim at (high enough that a few images reach the end).
STEPS = [("broad", "broad", 0.3), ("specialist", "specialist", 0.5), ("final", "3", 0.6)]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, f"photogenic {' '.join(args)}:\n{result.output}"
    return result.output


def _decisions(run: RunDir, name: str) -> list[dict]:
    return pq.read_table(run.decisions(name)).to_pylist()


@pytest.fixture(scope="module")
def three_passes(tmp_path_factory, ls_server, ls_config):
    base = tmp_path_factory.mktemp("review-passes")
    run = RunDir(base / "run")
    keys = make_fake_run(run.root, N_CANDIDATES, seed=3)
    cfg = str(write_config(base / "photogenic.toml", ls_config, PASSES))
    outputs = {}
    for seed, (name, ref, share) in enumerate(STEPS):
        common = ["--run", str(run.root), "--pass", ref, "--config", cfg]
        outputs[name] = [_invoke("review", "push", *common),
                         _invoke("review", "simulate", *common, "--annotators", "3", "--seed", str(seed),
                                 "--keep-share", str(share)),
                         _invoke("review", "pull", *common)]
    return {"run": run, "keys": keys, "cfg": cfg, "outputs": outputs}


def test_passes_command_lists_the_configured_passes(three_passes):
    assert _invoke("review", "passes", "--config", three_passes["cfg"]).split() == ["broad", "specialist", "final"]
    verbose = _invoke("review", "passes", "--config", three_passes["cfg"], "-v")
    assert "input specialist, label config rate, rule majority, min mean rating 3.0" in verbose


def test_each_pass_reviews_the_previous_pass_keeps_and_counts_shrink(three_passes):
    run, keys = three_passes["run"], three_passes["keys"]
    reviewed, kept = {}, {}
    for name, _, _ in STEPS:
        dec = _decisions(run, name)
        reviewed[name] = sorted(d["key"] for d in dec)
        kept[name] = sorted(d["key"] for d in dec if d["keep"])
        assert (run.review(name) / "_SUCCESS").exists() and run.annotations(name).exists()
    assert reviewed["broad"] == sorted(keys)
    assert reviewed["specialist"] == kept["broad"]
    assert reviewed["final"] == kept["specialist"]
    counts = [len(kept[name]) for name, _, _ in STEPS]
    assert N_CANDIDATES > counts[0] > counts[1] > counts[2] > 0, counts


def test_each_pass_decides_by_its_own_rule_and_label_config(three_passes):
    run = three_passes["run"]
    for d in _decisions(run, "specialist"):
        assert d["keep"] == (d["n_keep"] * 2 > d["n_annotations"])
    for d in _decisions(run, "final"):
        majority = d["n_keep"] * 2 > d["n_annotations"]
        assert d["keep"] == (majority and d["mean_rating"] is not None and d["mean_rating"] >= 3.0)
    ann = {name: pq.read_table(run.annotations(name)).to_pylist() for name, _, _ in STEPS}
    assert all(r["annotator"].startswith("sim-generalist-") for r in ann["broad"])
    assert all(r["annotator"].startswith("sim-specialist-") for r in ann["specialist"] + ann["final"])
    assert all(r["composition"] is None for r in ann["specialist"])  # "keep" label config: no ratings
    assert all(r["composition"] is not None for r in ann["final"])  # "rate" (the default after the first)
    assert {r["pass"] for r in ann["final"]} == {3}
    assert len(ann["final"]) == 3 * len(_decisions(run, "final"))  # every task to three specialists


def test_each_pull_writes_a_stage_summary(three_passes):
    run = three_passes["run"]
    inputs = {"broad": "candidates", "specialist": "broad", "final": "specialist"}
    for index, (name, _, _) in enumerate(STEPS):
        summary = json.loads(RunDir.summary(run.review(name)).read_text())
        dec = _decisions(run, name)
        kept = sum(d["keep"] for d in dec)
        assert summary["stage"] == "review"
        assert summary["counts"]["in"] == len(dec) and summary["counts"]["out"] == kept
        assert sum(summary["counts"]["by_reason"].values()) == len(dec) - kept
        assert summary["details"] == {"pass": name, "pass_index": index, "input": inputs[name],
                                      "rule": "any" if name == "broad" else "majority",
                                      "min_mean_rating": 3.0 if name == "final" else None}


def test_each_pass_has_its_own_project_and_the_cli_names_it(three_passes):
    out = three_passes["outputs"]
    assert out["broad"][0].startswith("broad: ") and out["final"][2].startswith("final: ")
    titles = {json.loads((three_passes["run"].review(name) / "project.json").read_text())["title"]
              for name, _, _ in STEPS}
    assert len(titles) == 3 and all(t.startswith("Photogenic ") for t in titles)
    assert any(t.startswith("Photogenic final ") for t in titles)
    status = json.loads(_invoke("review", "status", "--run", str(three_passes["run"].root), "--config",
                                three_passes["cfg"], "--json"))
    assert [(s["pass"], s["name"]) for s in status] == [(1, "broad"), (2, "specialist"), (3, "final")]
    assert all(s["source"] == "live" for s in status)


def test_unknown_pass_is_an_error_listing_the_configured_names(three_passes):
    result = CliRunner().invoke(cli, ["review", "push", "--run", str(three_passes["run"].root),
                                      "--pass", "pass2", "--config", three_passes["cfg"]])
    assert result.exit_code != 0
    assert "configured passes: 1 broad, 2 specialist, 3 final" in result.output


def test_export_from_the_last_pass(three_passes, tmp_path):
    run, cfg = three_passes["run"], three_passes["cfg"]
    final_keeps = sorted(d["key"] for d in _decisions(run, "final") if d["keep"])
    out = tmp_path / "export"
    _invoke("export", "--run", str(run.root), "--from", "final", "--out", str(out), "--config", cfg)
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["from"] == "final"
    assert sorted(pq.read_table(out / "manifest.parquet")["key"].to_pylist()) == final_keeps
    assert set(lineage["counts"]) >= {"broad", "specialist", "final"}
    # The default source is the last configured pass.
    default = tmp_path / "default"
    _invoke("export", "--run", str(run.root), "--out", str(default), "--config", cfg)
    assert json.loads((default / "lineage.json").read_text())["from"] == "final"
    bad = CliRunner().invoke(cli, ["export", "--run", str(run.root), "--from", "pass2", "--out",
                                   str(tmp_path / "x"), "--config", cfg])
    assert bad.exit_code != 0 and "candidates, broad, specialist, final" in bad.output
