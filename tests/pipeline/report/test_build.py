"""Report building without a browser: reruns, missing and broken stage outputs, the CLI, a real run."""
from __future__ import annotations

import re

import duckdb
from click.testing import CliRunner

from photogenic.pipeline.report.stage import build_report, report_cmd
from tests.pipeline.report.test_sections import make_fake_run


def data_counts(html: str) -> dict[str, int]:
    pattern = r'data-stage="(\w+)"><td>[^<]*</td>\s*<td class="n" data-count="(\d+)"'
    return {stage: int(n) for stage, n in re.findall(pattern, html)}


def test_rerun_replaces_the_page_atomically(tmp_path):
    run = make_fake_run(tmp_path)
    first = build_report(run, thumbs=2)
    before = first.read_text()
    second = build_report(run, thumbs=2)
    assert second == first
    assert sorted(p.name for p in (run / "report").iterdir()) == ["_SUCCESS", "index.html"]  # no temp files left
    # Same numbers on both runs, taken from the parquet files.
    assert data_counts(before) == data_counts(second.read_text())
    assert data_counts(before)["pool_rows"] == 30


def test_broken_stage_output_is_reported_not_fatal(tmp_path):
    run = make_fake_run(tmp_path)
    (run / "candidates" / "part-00000.parquet").write_bytes(b"PAR1 truncated garbage")
    (run / "model" / "training_state" / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    html = build_report(run).read_text()
    assert 'id="funnel" data-section="funnel" data-present="false"' in html
    assert "could not read this stage" in html
    # The other sections still render; the half-written metrics line is skipped.
    assert 'id="histograms" data-section="histograms" data-present="true"' in html
    assert 'id="training" data-section="training" data-present="true"' in html
    assert "1 metric records" in html


def test_empty_run_dir_gives_a_page_that_says_nothing_ran(tmp_path):
    run = tmp_path / "empty-run"
    run.mkdir()
    html = build_report(run).read_text()
    assert html.count('data-present="false"') == 8  # the reject audit's section too
    assert "filter not run yet" in html


def test_cli_writes_report_and_rejects_a_missing_run(tmp_path):
    run = make_fake_run(tmp_path, stages="scores")
    result = CliRunner().invoke(report_cmd, ["--run", str(run), "--thumbs", "1"])
    assert result.exit_code == 0, result.output
    assert (run / "report" / "index.html").exists()
    missing = CliRunner().invoke(report_cmd, ["--run", str(tmp_path / "nope")])
    assert missing.exit_code != 0
    assert "run directory not found" in missing.output


def test_report_of_a_real_filter_run_counts_its_parquet(scored_run, tmp_path):
    # The lead's real filter job output (real images in tar shards, real score rows).
    page = build_report(scored_run, out=tmp_path / "report", thumbs=2).read_text()
    files = [str(p) for p in sorted((scored_run / "scores").glob("part-*.parquet"))]
    db = duckdb.connect()
    total, passed = db.execute("SELECT count(*), count(*) FILTER (passed) FROM read_parquet(?)", [files]).fetchone()
    counts = data_counts(page)
    assert counts["pool_rows"] == total and counts["scores_passed"] == passed
    reasons = dict(db.execute("SELECT reject_reason, count(*) FROM read_parquet(?) WHERE NOT passed GROUP BY 1",
                              [files]).fetchall())
    for reason, n in reasons.items():
        assert f'data-reason="{reason}"><td>{reason}</td><td class="n" data-count="{n}"' in page
    assert page.count("data:image/jpeg;base64,") >= 2  # thumbnails read back from the tar shards


def test_unfinished_stage_is_marked_in_progress(tmp_path):
    run = make_fake_run(tmp_path)
    (run / "candidates" / "_SUCCESS").unlink()
    html = build_report(run).read_text()
    row = re.search(r'<tr data-stage="candidates">.*?</tr>', html, re.S).group(0)
    assert 'data-in-progress="true"' in row
    assert html.count('data-in-progress="true"') == 1
