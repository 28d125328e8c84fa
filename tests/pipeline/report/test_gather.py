"""The report's gathering step on its own (plain data, no figures): review passes discovered from
the run, and stage outcomes read generically from `_summary.json`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import mark_success, write_json_atomic, write_parquet_atomic
from photogenic.pipeline.core.summary import StageSummary, write_summary
from photogenic.pipeline.report.gather import (
    Run,
    concepts_section,
    context,
    funnel_section,
    review_passes,
    review_section,
    select_details,
    stage_summary_sections,
    thumbnails_section,
)
from tests.pipeline.report.test_sections import make_fake_run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("report-gather"))


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _add_pass(run: Path, name: str, keep: dict[str, bool], pass_index: int | None = None) -> None:
    folder = run / "review" / name
    write_parquet_atomic(pa.Table.from_pylist([{"key": k, "keep": v} for k, v in keep.items()]),
                         folder / "decisions.parquet")
    write_parquet_atomic(pa.Table.from_pylist([{"key": k, "annotator": "ann"} for k in keep]),
                         folder / "annotations.parquet")
    if pass_index is not None:
        write_summary(folder, StageSummary("review", "", len(keep), sum(keep.values()),
                                           details={"pass_index": pass_index}))
    mark_success(folder)


def _pass2_kept(run: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(run / "review" / "pass2" / "decisions.parquet").to_pylist()
    return [r["key"] for r in table if r["keep"]]


def test_passes_are_discovered_by_their_decisions_in_natural_order(fake_run, tmp_path):
    run = _copy(fake_run, tmp_path)
    kept = _pass2_kept(run)
    _add_pass(run, "pass10", {k: True for k in kept[:1]})
    _add_pass(run, "pass3", {k: i == 0 for i, k in enumerate(kept)})
    (run / "review" / "media").mkdir()  # images for Label Studio: not a pass
    (run / "review" / "pass4").mkdir()  # nothing pulled yet: not a pass
    assert [p.name for p in review_passes(RunDir(run))] == ["pass1", "pass2", "pass3", "pass10"]


def test_pass_order_follows_the_pass_index_of_their_summaries(fake_run, tmp_path):
    run = _copy(fake_run, tmp_path)
    _add_pass(run, "expert", {k: True for k in _pass2_kept(run)}, pass_index=3)
    for index, name in ((1, "pass2"), (2, "pass1")):  # indexes win over names
        write_summary(run / "review" / name, StageSummary("review", "", 1, 1, details={"pass_index": index}))
    assert [p.name for p in review_passes(RunDir(run))] == ["pass2", "pass1", "expert"]


def test_three_passes_give_three_funnel_rows_and_three_review_entries(fake_run, tmp_path):
    run = _copy(fake_run, tmp_path)
    kept2 = _pass2_kept(run)
    _add_pass(run, "pass3", {k: i < 2 for i, k in enumerate(kept2)})
    gathered = Run(run)
    ctx = context(gathered, thumbs=2)

    stages = {r["id"]: r for r in funnel_section(gathered, ctx).data["stages"]}
    assert [sid for sid in stages if sid.endswith("_kept")] == ["pass1_kept", "pass2_kept", "pass3_kept"]
    assert stages["pass3_kept"]["count"] == 2
    assert stages["pass3_kept"]["label"] == "kept in review pass 3 (curated)"
    assert stages["pass2_kept"]["label"] == "kept in review pass 2"
    assert stages["pass2_kept"]["count"] == len(kept2)

    passes = review_section(gathered, ctx).data["passes"]
    assert [(p["name"], p["pass"], p["decisions"], p["kept"]) for p in passes] == [
        ("pass1", 1, 18, 12), ("pass2", 2, 12, len(kept2)), ("pass3", 3, len(kept2), 2)]
    assert passes[2]["per_annotator"] == [{"annotator": "ann", "annotations": len(kept2)}]

    series = concepts_section(gathered, ctx).data["series"]
    assert "review pass 3 kept" in series and sum(series["review pass 3 kept"].values()) == 2


def test_the_deepest_pass_feeds_the_kept_contact_sheet(fake_run, tmp_path):
    run = _copy(fake_run, tmp_path)
    shutil.rmtree(run / "export")
    _add_pass(run, "pass3", {k: i == 0 for i, k in enumerate(_pass2_kept(run))})
    sheet = thumbnails_section(Run(run), context(Run(run), thumbs=8)).data["sheets"][0]
    assert sheet["title"] == "kept (kept in review pass 3)"
    assert [it["key"] for it in sheet["images"]] == [_pass2_kept(run)[0]]


def test_stage_summaries_are_read_generically(fake_run, tmp_path):
    run = _copy(fake_run, tmp_path)
    write_summary(run / "candidates", StageSummary(
        "select", "abc", 22, 18, by_reason={"duplicate": 3, "quota": 1}, seconds=0.5,
        details={"target": 18, "seed": 0, "duplicates_removed": {"exact": 7, "near": 1}}))
    write_summary(run / "review" / "pass1", StageSummary("review", "", 18, 12, details={"pass_index": 1}))
    (run / "model" / "_summary.json").write_text(json.dumps(
        StageSummary("train", "f", 9, 9, details={"steps": 60}).to_json()))
    gathered = Run(run)
    ctx = context(gathered, thumbs=2)
    sections = {s.id: s for s in stage_summary_sections(gathered, ctx)}
    assert list(sections) == ["summary-scores", "summary-candidates", "summary-review-pass1",
                              "summary-review-pass2", "summary-model"]
    select = sections["summary-candidates"].data
    assert (select["stage"], select["rows_in"], select["rows_out"], select["seconds"]) == ("select", 22, 18, 0.5)
    assert select["by_reason"] == [{"reason": "duplicate", "count": 3}, {"reason": "quota", "count": 1}]
    assert select["source"] == "candidates/_summary.json"
    assert sections["summary-review-pass1"].data["source"] == "review/pass1/_summary.json"
    assert sections["summary-model"].title == "Stage: train"
    assert sections["summary-model"].kind == "stage_summary"
    # Select's own counts moved under `details`: the funnel and concept sections still find them.
    assert select_details(RunDir(run))["duplicates_removed"] == {"exact": 7, "near": 1}
    assert funnel_section(gathered, ctx).data["selection"]["duplicates removed (exact)"] == 7


def test_stages_without_a_summary_fall_back_to_their_files(fake_run, tmp_path):
    run = _copy(fake_run, tmp_path)
    write_json_atomic({"from": "pass2", "input_fingerprint": "x",
                       "counts": {"exported": 4, "skipped": 1, "splits": {"train": 3, "validation": 1},
                                  "read_from_stage": {"read": 12, "kept": 5}}},
                      run / "export" / "lineage.json")
    gathered = Run(run)
    sections = {s.id: s.data for s in stage_summary_sections(gathered, context(gathered, thumbs=2))}
    scores = sections["summary-scores"]
    assert (scores["stage"], scores["rows_in"], scores["rows_out"]) == ("filter", 30, 22)
    assert scores["source"].startswith("scores/_funnel.json")
    assert {r["reason"]: r["count"] for r in scores["by_reason"]}["technical"] == 3
    select = sections["summary-candidates"]
    assert (select["rows_in"], select["rows_out"]) == (None, 18)  # the older file has no input count
    assert sections["summary-review-pass2"]["rows_in"] == 12
    export = sections["summary-export"]
    assert (export["rows_in"], export["rows_out"], export["details"]["splits"]["train"]) == (5, 4, 3)


def test_an_empty_run_has_no_stage_summaries(tmp_path):
    gathered = Run(tmp_path)
    assert stage_summary_sections(gathered, context(gathered, thumbs=1)) == []


def test_a_run_without_review_shows_one_review_row_not_run_yet(tmp_path):
    run = make_fake_run(tmp_path, stages="scores")
    gathered = Run(run)
    stages = {r["id"]: r for r in funnel_section(gathered, context(gathered, thumbs=1)).data["stages"]}
    assert [sid for sid in stages if "kept" in sid] == ["review_kept"]
    assert stages["review_kept"]["count"] is None


def test_an_adaptive_filter_run_says_its_reasons_follow_the_orders_used(fake_run, tmp_path):
    from photogenic.pipeline.core.runio import read_json

    run = _copy(fake_run, tmp_path)
    funnel = run / "scores" / "_funnel.json"
    gathered = Run(run)
    assert funnel_section(gathered, context(gathered, thumbs=1)).data["cascade_orders"] == {}
    orders = {"geometry > caption > technical": 3, "caption > geometry > technical": 1}
    write_json_atomic({**read_json(funnel), "cascade_orders": orders}, funnel)
    gathered = Run(run)
    assert funnel_section(gathered, context(gathered, thumbs=1)).data["cascade_orders"] == orders
    from photogenic.pipeline.report.stage import build_report

    page = build_report(run, out=tmp_path / "report", thumbs=1).read_text()
    assert 'id="adaptive-orders"' in page and "geometry &gt; caption &gt; technical</code> (3)" in page
