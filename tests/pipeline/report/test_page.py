"""The rendered page: a run with three review passes shows all three, and every stage summary
gets a section of its own."""
from __future__ import annotations

import re
from importlib import resources

import pyarrow as pa

from photogenic.pipeline.core.runio import mark_success, write_parquet_atomic
from photogenic.pipeline.core.summary import StageSummary, write_summary
from photogenic.pipeline.report.stage import build_report
from tests.pipeline.report.test_sections import make_fake_run


def test_templates_ship_with_the_package():
    templates = resources.files("photogenic.pipeline.report") / "templates"
    assert (templates / "index.html.j2").is_file() and (templates / "stage_summary.html.j2").is_file()


def test_three_review_passes_and_stage_summaries_on_the_page(tmp_path):
    run = make_fake_run(tmp_path)
    write_parquet_atomic(pa.Table.from_pylist([{"key": "k009", "keep": True}, {"key": "k010", "keep": False}]),
                         run / "review" / "pass3" / "decisions.parquet")
    mark_success(run / "review" / "pass3")
    write_summary(run / "candidates", StageSummary("select", "fp", 22, 18, by_reason={"duplicate": 3},
                                                   details={"target": 18}))
    html = build_report(run, thumbs=1).read_text()
    assert re.findall(r'data-stage="(pass\d_kept)"', html) == ["pass1_kept", "pass2_kept", "pass3_kept"]
    assert re.search(r'data-stage="pass3_kept"><td>kept in review pass 3 \(curated\)</td>\s*'
                     r'<td class="n" data-count="1"', html)
    assert re.findall(r'data-review-pass="(\w+)"', html) == ["1", "2", "3"]
    select = re.search(r'<section id="summary-candidates".*?</section>', html, re.S).group(0)
    assert 'data-field="in">22<' in select and 'data-field="out">18<' in select
    assert 'data-summary-reason="duplicate"' in select
    assert "candidates/_summary.json</code>" in select
    assert 'id="summary-review-pass3"' in html
