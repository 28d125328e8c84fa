"""The report rendered in real headless Chromium: every section with data is there, and the page's
numbers equal counts taken straight from the run's parquet files."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.report.stage import build_report
from tests.pipeline.report.test_sections import make_fake_run

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
from tests.conftest import ARTIFACTS  # noqa: E402


def expected_counts(run: Path) -> dict[str, int]:
    scores = pq.read_table(sorted(str(p) for p in (run / "scores").glob("part-*.parquet")))
    candidates = pq.read_table(run / "candidates" / "part-00000.parquet")
    pass1 = pq.read_table(run / "review" / "pass1" / "decisions.parquet")
    pass2 = pq.read_table(run / "review" / "pass2" / "decisions.parquet")
    manifest = pq.read_table(run / "export" / "manifest.parquet")
    return {
        "pool_rows": scores.num_rows,
        "scores_passed": pc.sum(scores["passed"]).as_py(),
        "candidates": candidates.num_rows,
        "pass1_kept": pc.sum(pass1["keep"]).as_py(),
        "pass2_kept": pc.sum(pass2["keep"]).as_py(),
        "export": manifest.num_rows,
        "model": pc.sum(pc.equal(manifest["split"], "train")).as_py(),
    }


def expected_reasons(run: Path) -> dict[str, int]:
    scores = pq.read_table(sorted(str(p) for p in (run / "scores").glob("part-*.parquet")))
    failed = scores.filter(pc.invert(scores["passed"]))
    return {r["values"]: r["counts"] for r in pc.value_counts(failed["reject_reason"]).to_pylist()}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install the chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_report(browser, path: Path, shot: str):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    return page


def test_full_run_report_in_chromium_matches_parquet(tmp_path, browser):
    run = make_fake_run(tmp_path)
    page = open_report(browser, build_report(run), "report-full.png")
    assert (ARTIFACTS / "report-full.png").stat().st_size > 10_000

    shown = {el.get_attribute("data-stage"): int(el.query_selector("[data-count]").get_attribute("data-count"))
             for el in page.query_selector_all("#funnel-table tr[data-stage]") if el.query_selector("[data-count]")}
    assert shown == expected_counts(run)
    # The visible text says the same as the attribute.
    visible = page.inner_text("#funnel-table tr[data-stage=pool_rows] td.n")
    assert visible.replace(",", "") == str(expected_counts(run)["pool_rows"])

    reasons = {el.get_attribute("data-reason"): int(el.query_selector("[data-count]").get_attribute("data-count"))
               for el in page.query_selector_all("#reject-table tr[data-reason]")}
    assert reasons == expected_reasons(run)

    present = {el.get_attribute("id"): el.get_attribute("data-present") for el in page.query_selector_all("section")}
    for section in ("funnel", "histograms", "concepts", "thumbnails", "review", "training"):
        assert present[section] == "true", section
    assert present["eval"] == "false"
    assert "not run yet" in page.inner_text("#eval")

    assert page.is_visible("#meaningless-warning")
    assert "clip_score" in page.inner_text("#meaningless-warning")
    assert page.query_selector("[data-hist=clip_score]").get_attribute("data-meaningless") == "true"
    assert page.is_visible("#simulation-warning")
    assert page.query_selector_all("[data-simulated]")

    # Every chart and thumbnail decoded in the browser; the broken source shows a placeholder.
    broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0
    assert page.evaluate("document.images.length") > 20
    assert "unreadable" in page.inner_text("[data-sheet=rejected-unreadable]")
    page.close()


def test_scores_only_report_says_later_stages_have_not_run(tmp_path, browser):
    run = make_fake_run(tmp_path, stages="scores")
    page = open_report(browser, build_report(run), "report-scores-only.png")
    present = {el.get_attribute("id"): el.get_attribute("data-present") for el in page.query_selector_all("section")}
    assert present["funnel"] == present["histograms"] == present["thumbnails"] == "true"
    for section in ("review", "training", "eval"):
        assert present[section] == "false"
        assert "not run yet" in page.inner_text(f"#{section}")
    assert "not run yet" in page.inner_text("#funnel-table tr[data-stage=candidates]")
    assert page.query_selector("#funnel-table tr[data-stage=candidates] [data-count]") is None
    assert not page.query_selector("#simulation-warning")
    page.close()
