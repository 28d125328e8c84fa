"""A person in headless Chromium (Debian's /usr/bin/chromium driven by Playwright, no browser
download) logs in to the real Label Studio: reviews a pass-1 grid of 16 images from the queue with
the keyboard only (each keep box's key, Ctrl+Enter), and the next pull has a decision per image;
opens a pass-2 task, rates it and keeps it by clicking, submits; the next pull has exactly that
annotation. Screenshots are saved."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from photogenic.annotation.lsclient import Client
from photogenic.annotation.pull import pull
from photogenic.annotation.push import push
from photogenic.pipeline.core.runio import mark_success, write_parquet_atomic
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import annotator_store, artifacts_dir, make_fake_run

# The session's one Label Studio server (fixtures ls_config, ls_server, ls_client) is shared by
# every review test file through this plugin, so it starts once per test session.
pytest_plugins = ["tests.annotation.helpers"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-dev-shm-usage"]
RATINGS = {"composition": 4, "lighting": 5, "colour": 3, "subject": 4, "background": 2}
EMAIL = "browser-specialist@photogenic.local"


def _pass1_keepers(run: Path, keys: list[str]) -> None:
    """Pass 1 as if it had been pulled: two keepers go on to pass 2."""
    cands = pq.read_table(run / "candidates" / "part-00000.parquet")
    keep = pa.array([k in keys[:2] for k in cands["key"].to_pylist()])
    write_parquet_atomic(cands.append_column("keep", keep), run / "review" / "pass1" / "decisions.parquet")
    mark_success(run / "review" / "pass1")


def _login(page, url: str, email: str, password: str) -> None:
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state("networkidle")


def test_review_browser_person_reviews_a_pass1_grid_with_the_keyboard(tmp_path, ls_server, ls_config):
    from playwright.sync_api import expect, sync_playwright

    assert os.path.exists(CHROMIUM), "needs Debian's chromium: apt-get install -y chromium"
    run = tmp_path / "run"
    keys = make_fake_run(run, 16, prefix="gk")
    client = Client(ls_server)
    pushed = push(run, 1, client, ls_config, echo=lambda m: None)
    assert (pushed.n_tasks, pushed.n_in_project) == (1, 16)
    task = client.tasks(pushed.project_id, fields="task_only")[0]
    grid = task["data"]["keys"]
    user = annotator_store(ls_config).ensure(client, "browser-generalist@photogenic.local")
    keep_slots = {0, 2, 9, 11, 15}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(120_000)
            _login(page, client.url, "browser-generalist@photogenic.local", user["password"])
            page.goto(f"{client.url}/projects/{pushed.project_id}/data?labeling=1")  # the queue
            boxes = page.locator("input[name=keep]")
            expect(boxes).to_have_count(16, timeout=120_000)
            close = page.locator('button[aria-label="Close modal"]')  # the instructions may pop up
            if close.count() and close.first.is_visible():
                close.first.click()
            page.wait_for_load_state("networkidle")
            hints = [h.strip("[]") for h in page.locator(".lsf-choice .lsf-hint").all_inner_texts()]
            assert len(set(hints)) == 16  # every image has its own key
            page.locator("body").click(position={"x": 5, "y": 5})  # focus the page, not a field
            for slot in sorted(keep_slots):
                page.keyboard.press(hints[slot])
            expect(page.locator("input[name=keep]:checked")).to_have_count(len(keep_slots))
            assert [boxes.nth(i).is_checked() for i in range(16)] == [i in keep_slots for i in range(16)]
            page.screenshot(path=str(artifacts_dir() / "review-browser-pass1-grid.png"), full_page=True)
            with page.expect_response(lambda r: "/annotations" in r.url and r.request.method == "POST") as response:
                page.keyboard.press("Control+Enter")
            assert response.value.status == 201
            page.wait_for_load_state("networkidle")
        except Exception:
            page.screenshot(path=str(artifacts_dir() / "review-browser-grid-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    pull(run, 1, client, ls_config)
    dec = {d["key"]: d for d in pq.read_table(run / "review" / "pass1" / "decisions.parquet").to_pylist()}
    assert sorted(dec) == sorted(keys)
    assert {k: dec[k]["keep"] for k in grid} == {k: i in keep_slots for i, k in enumerate(grid)}
    assert all(dec[k]["n_annotations"] == 1 for k in grid)
    ann = pq.read_table(run / "review" / "pass1" / "annotations.parquet").to_pylist()
    assert len(ann) == 16 and {a["annotator"] for a in ann} == {"browser-generalist@photogenic.local"}
    assert all(a["lead_time"] and a["lead_time"] > 0 for a in ann)  # the grid's time, shared out


def test_review_browser_annotator_rates_and_keeps_a_pass2_task(tmp_path, ls_server, ls_config):
    from playwright.sync_api import expect, sync_playwright

    assert os.path.exists(CHROMIUM), "needs Debian's chromium: apt-get install -y chromium"
    run = tmp_path / "run"
    keys = make_fake_run(run, 4, prefix="w")
    _pass1_keepers(run, keys)
    client = Client(ls_server)
    pushed = push(run, 2, client, ls_config, echo=lambda m: None)
    assert pushed.n_in_project == 2
    task = sorted(client.tasks(pushed.project_id, fields="task_only"), key=lambda t: t["id"])[0]
    user = annotator_store(ls_config).ensure(client, EMAIL)

    shot = artifacts_dir() / "review-browser-pass2.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(120_000)
            _login(page, client.url, EMAIL, user["password"])
            page.goto(f"{client.url}/projects/{pushed.project_id}/data?task={task['id']}")
            rates = page.locator(".ant-rate")
            rates.first.wait_for()
            close = page.locator('button[aria-label="Close modal"]')  # the instructions may pop up
            if close.count() and close.first.is_visible():
                close.first.click()
            # The labeling view re-renders once the prediction tab loads: wait for all five.
            expect(rates).to_have_count(len(RATINGS), timeout=120_000)
            page.wait_for_load_state("networkidle")
            for i, value in enumerate(RATINGS.values()):
                rates.nth(i).locator(".ant-rate-star").nth(value - 1).click()
            page.locator(".lsf-choice__checkbox").filter(has_text="keep").click()
            page.screenshot(path=str(shot), full_page=True)  # the filled-in task, before submitting
            with page.expect_response(lambda r: f"/api/tasks/{task['id']}/annotations" in r.url
                                      and r.request.method == "POST") as response:
                page.locator('[data-testid="bottombar-submit-button"]').click()
            assert response.value.status == 201
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artifacts_dir() / "review-browser-pass2-submitted.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(artifacts_dir() / "review-browser-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000

    pull(run, 2, client, ls_config)
    ann = pq.read_table(run / "review" / "pass2" / "annotations.parquet").to_pylist()
    mine = [a for a in ann if a["annotator"] == EMAIL]
    assert len(mine) == 1
    a = mine[0]
    assert a["key"] == task["data"]["key"] and a["keep"] is True
    assert {name: a[name] for name in RATINGS} == RATINGS
    assert a["lead_time"] and a["lead_time"] > 0
    dec = {d["key"]: d for d in pq.read_table(run / "review" / "pass2" / "decisions.parquet").to_pylist()}
    assert dec[a["key"]]["n_annotations"] == 1 and dec[a["key"]]["keep"] is True  # 1 of 1, mean 3.6
