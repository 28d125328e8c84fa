"""The human A/B evaluation through a real Label Studio: push, annotations submitted through the
API by real annotator accounts, pull; the left/right placement is undone in the tallies. Then
SIMULATED raters (`eval simulate`) answer a small fresh push through Label Studio's queue."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner

from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.annotation.lsclient import Client
from photogenic.annotation.users import AnnotatorStore
from photogenic.pipeline.report.stage import build_report
from tests.annotation.helpers import free_port, ls_server  # noqa: F401
from tests.training.eval_fixtures import eval_out, prompts_file, tiny_models  # noqa: F401
from tests.pipeline.report.test_browser import browser, open_report  # noqa: F401
from tests.pipeline.report.test_sections import make_fake_run
from photogenic.pipeline.core.config.training import EvalConfig
from photogenic.training.eval_ab import ab_dir, pull, push
from photogenic.training.eval_simulate import choice, raters
from photogenic.training.eval_cli import eval_group

RATERS = ("ab-rater-1@photogenic.local", "ab-rater-2@photogenic.local", "ab-rater-3@photogenic.local")


def scripted_choice(question: str, category: str, rater: int, tuned_on: str) -> str | None:
    """What each scripted rater answers, given which side the page shows the tuned image on."""
    base_on = "Right" if tuned_on == "Left" else "Left"
    if question == "appeal":
        return {"alpha": [tuned_on] * 3,  # everyone prefers tuned -> win
                "beta": [base_on] * 3,  # everyone prefers base -> loss
                "gamma": [tuned_on, base_on, "Tie"]}[category][rater]  # 1-1 -> tie
    return {"alpha": ["Both", "Both", "Neither"],  # ties
            "beta": [tuned_on, tuned_on, base_on],  # 2-1 -> win
            "gamma": ["Neither", base_on, None]}[category][rater]  # rater 3 skips -> loss


EXPECTED = {"appeal": {"alpha": "win", "beta": "loss", "gamma": "tie"},
            "faithfulness": {"alpha": "tie", "beta": "win", "gamma": "loss"}}


def shown(client, url: str) -> bytes:
    """The bytes of an image as the labelling page gets them from Label Studio."""
    resp = requests.get(client.url + url, timeout=30, headers={"Authorization": f"Token {client.conn.token}"})
    assert resp.status_code == 200, url
    return resp.content


def annotate(client, tokens: list[str], project_id: int, question: str, categories: dict[str, str],
             out: Path) -> int:
    """Every rater answers every task through the API, as the scripted preferences say."""
    posted = 0
    for task in client.tasks(project_id):
        data = task["data"]
        # The rater "sees" the page: which side shows the tuned model's picture, by its pixels.
        left = shown(client, data["left"])
        tuned = (out / "images" / "tuned" / f"{data['pair_id']}.png").read_bytes()
        base = (out / "images" / "base" / f"{data['pair_id']}.png").read_bytes()
        assert left in (tuned, base) and shown(client, data["right"]) == (base if left == tuned else tuned)
        tuned_on = "Left" if left == tuned else "Right"
        for rater, token in enumerate(tokens):
            choice = scripted_choice(question, categories[data["pair_id"]], rater, tuned_on)
            body = {"lead_time": 2.5, "result": [] if choice is None else [
                {"from_name": question, "to_name": "left", "type": "choices", "value": {"choices": [choice]}}]}
            if choice is None:
                body["was_cancelled"] = True
            client.as_user(token).post(f"/api/tasks/{task['id']}/annotations/", json=body)
            posted += choice is not None
    return posted


@pytest.fixture(scope="session")
def ls_config():
    """The review tests' server settings, with a longer start timeout: a first start runs
    migrations, which took over 180 s on a loaded 2-core machine."""
    data = tempfile.mkdtemp(prefix="photogenic-ls-ab-")
    yield ReviewConfig(port=free_port(), data_dir=data, start_timeout_s=900)
    shutil.rmtree(data, ignore_errors=True)  # after ls_server's teardown stopped the server


CFG = EvalConfig(appeal_raters=3, faithfulness_raters=3)


@pytest.fixture(scope="module")
def ab_out(eval_out, tmp_path_factory) -> Path:
    return shutil.copytree(eval_out, tmp_path_factory.mktemp("ab") / "eval")


@pytest.fixture(scope="module")
def pushed(ab_out, ls_server, ls_config):
    client = Client(ls_server, max_retries=ls_config.max_retries)
    first = push(ab_out, client, CFG, echo=lambda m: None)
    again = push(ab_out, client, CFG, echo=lambda m: None)  # idempotent: nothing new
    return client, first, again


@pytest.fixture(scope="module")
def pulled(pushed, ab_out, tmp_path_factory):
    """Three real annotator accounts answer every task through the API; then pull, twice."""
    client, first, _ = pushed
    store = AnnotatorStore(tmp_path_factory.mktemp("raters") / "annotators.json")
    tokens = [store.ensure(client, email)["token"] for email in RATERS]
    placed = pq.read_table(ab_dir(ab_out) / "tasks.parquet").to_pylist()
    categories = {p["pair_id"]: p["category"] for p in placed}
    votes = {q: annotate(client, tokens, first["projects"][q]["project_id"], q, categories, ab_out)
             for q in ("appeal", "faithfulness")}
    results = pull(ab_out, client, CFG)
    again = pull(ab_out, client, CFG)
    return results, again, votes


def test_push_is_idempotent_and_randomised(pushed, ab_out):
    _, first, again = pushed
    for q in ("appeal", "faithfulness"):
        assert first["projects"][q]["imported"] == 12 and again["projects"][q]["imported"] == 0
        assert again["projects"][q]["tasks"] == 12
    placed = pq.read_table(ab_dir(ab_out) / "tasks.parquet").to_pylist()
    assert len(placed) == 24
    for q in ("appeal", "faithfulness"):
        sides = [p["tuned_side"] for p in placed if p["question"] == q]
        assert 0 < sides.count("left") < 12  # both placements really occur


def test_projects_ask_the_papers_questions(pushed, ab_out):
    client, first, _ = pushed
    appeal = client.project(first["projects"]["appeal"]["project_id"])
    faith = client.project(first["projects"]["faithfulness"]["project_id"])
    assert "$prompt" not in appeal["label_config"] and "$prompt" in faith["label_config"]
    assert "Both" in faith["label_config"] and "Neither" in faith["label_config"]
    assert appeal["maximum_annotations"] == 3 and faith["maximum_annotations"] == 3
    appeal_tasks = client.tasks(appeal["id"])
    assert all("prompt" not in t["data"] and "tuned_side" not in t["data"] for t in appeal_tasks)
    # Blind: no URL names the model. The page gets the generated files from local-files storage.
    for t in appeal_tasks:
        assert not any(word in t["data"][side] for word in ("tuned", "base") for side in ("left", "right"))
    task = appeal_tasks[0]
    pair_files = {(ab_out / "images" / m / f"{task['data']['pair_id']}.png").read_bytes() for m in ("tuned", "base")}
    assert {shown(client, task["data"]["left"]), shown(client, task["data"]["right"])} == pair_files


def test_pull_undoes_left_right(pulled, ab_out):
    results, again, votes = pulled
    assert again["tables"] == results["tables"]  # a second pull neither loses nor double-counts
    for q, expected in EXPECTED.items():
        table = results["tables"][q]
        assert table["all"]["n"] == 12
        for category, result in expected.items():
            row = table[category]
            assert row["n"] == 4 and row[result] == 1.0, (q, category, row)
        assert results["tasks"][q]["votes"] == votes[q]
    assert results["tasks"]["appeal"]["complete"] == 12
    assert results["tasks"]["faithfulness"]["complete"] == 8  # gamma tasks: one rater skipped
    recorded = pq.read_table(ab_dir(ab_out) / "votes.parquet").to_pylist()
    assert {v["annotator"] for v in recorded} == set(RATERS)
    assert len(recorded) == votes["appeal"] + votes["faithfulness"]
    assert any("tiny/random" in n for n in results["notes"])
    assert results["simulated"] is False and not any(v["simulated"] for v in recorded)
    saved = json.loads((ab_out / "human_results.json").read_text())
    assert saved["tables"] == json.loads(json.dumps(results["tables"]))


def test_report_shows_the_eval(pulled, ab_out, browser, tmp_path):
    run = make_fake_run(tmp_path)
    shutil.copytree(ab_out, run / "eval")
    page = open_report(browser, build_report(run), "report-with-eval.png")
    assert page.get_attribute("#eval", "data-present") == "true"
    assert page.is_visible("#eval-warning")
    assert page.get_attribute("#eval-summary", "data-pairs") == "12"
    auto = json.loads((ab_out / "results.json").read_text())["tables"]
    for metric in ("clip_score", "aesthetic_score"):
        cells = page.query_selector_all(f"[data-eval-metric={metric}] tr[data-category=all] td")
        assert cells[1].inner_text() == str(auto[metric]["all"]["n"])
        assert cells[2].inner_text() == f"{100 * auto[metric]['all']['win']:.1f}%"
    for q, expected in EXPECTED.items():
        for category, result in expected.items():
            cells = page.query_selector_all(f"[data-human-question={q}] tr[data-category={category}] td")
            column = {"win": 2, "tie": 3, "loss": 4}[result]
            assert cells[column].inner_text() == "100.0%", (q, category)
    assert len(page.query_selector_all("#eval-examples tr[data-pair]")) == 3  # one per category
    assert page.query_selector("#eval-human-simulated") is None  # scripted test raters are not flagged
    broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0
    page.close()


def test_ab_cli_push_and_pull(pulled, ab_out, ls_config, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[review]\nport = {ls_config.port}\ndata_dir = "{ls_config.data_dir}"\n'
                      "[eval]\nappeal_raters = 3\nfaithfulness_raters = 3\n")
    out = shutil.copytree(ab_out, tmp_path / "eval")  # same ab id: the same projects are found
    pushed = CliRunner().invoke(eval_group, ["push", "--out", str(out), "--config", str(config)])
    assert pushed.exit_code == 0, pushed.output
    assert "appeal: project" in pushed.output and "0 new task(s), 12 in total" in pushed.output
    pulled_cli = CliRunner().invoke(eval_group, ["pull", "--out", str(out), "--config", str(config)])
    assert pulled_cli.exit_code == 0, pulled_cli.output
    assert "appeal: 12 of 12 tasks have votes (12 complete)" in pulled_cli.output
    saved = json.loads((out / "human_results.json").read_text())
    assert saved["tables"]["appeal"]["alpha"]["win"] == 1.0
    missing = CliRunner().invoke(eval_group, ["pull", "--out", str(tmp_path), "--config", str(config)])
    assert missing.exit_code != 0 and "eval push" in missing.output


SIM_PAIRS, SIM_RATERS = 4, {"appeal": 3, "faithfulness": 2}


def test_simulated_raters_through_the_queue(eval_out, ls_server, ls_config, tmp_path):
    """push 4 pairs, `eval simulate` (3 SIMULATED raters, seeded), pull: every task gets exactly
    its project's raters, every vote is flagged simulated, the tallies add up, a rerun submits 0."""
    config = tmp_path / "config.toml"
    config.write_text(f'[review]\nport = {ls_config.port}\ndata_dir = "{ls_config.data_dir}"\n'
                      f'[eval]\nappeal_raters = {SIM_RATERS["appeal"]}\n'
                      f'faithfulness_raters = {SIM_RATERS["faithfulness"]}\n')
    out = shutil.copytree(eval_out, tmp_path / "eval")  # no ab/ yet: a new ab id, projects of its own
    common = ["--out", str(out), "--config", str(config)]
    invoke = lambda *args: CliRunner().invoke(eval_group, [*args, *common])  # noqa: E731
    pushed = invoke("push", "--limit", str(SIM_PAIRS))
    assert pushed.exit_code == 0, pushed.output
    sim = invoke("simulate", "--seed", "3")
    assert sim.exit_code == 0, sim.output
    assert sim.output.count("SIMULATION") >= 3 and "not human judgements" in sim.output
    summary = json.loads((ab_dir(out) / "simulation.json").read_text())
    assert summary["simulated"] is True and summary["note"].startswith("SIMULATION")
    assert len(summary["raters"]) == 3  # default: the larger of the two rater counts
    assert summary["annotations_submitted"] == SIM_PAIRS * sum(SIM_RATERS.values())

    client = Client(ls_server, max_retries=ls_config.max_retries)
    for q, wanted in SIM_RATERS.items():
        tasks = client.tasks(summary["questions"][q]["project_id"], fields="all")
        assert len(tasks) == SIM_PAIRS
        for t in tasks:
            authors = [a["completed_by"] for a in t["annotations"]]
            assert len(authors) == wanted == len(set(authors)), (q, t["id"])  # its raters, all different
        # What the queue loop reads to tell a transient 404 (a colleague's half-done submission) from the end.
        light = client.tasks(summary["questions"][q]["project_id"], fields="task_only")
        assert all(t["total_annotations"] == t["overlap"] == wanted for t in light)

    pulled_cli = invoke("pull")
    assert pulled_cli.exit_code == 0, pulled_cli.output
    assert "SIMULATION" in pulled_cli.output and f"SIMULATED appeal: {SIM_PAIRS} of {SIM_PAIRS} tasks" in pulled_cli.output
    results = json.loads((out / "human_results.json").read_text())
    assert results["simulated"] is True and results["notes"][0].startswith("SIMULATION")
    votes = pq.read_table(ab_dir(out) / "votes.parquet").to_pylist()
    assert votes and all(v["simulated"] and v["annotator"].startswith("sim-abrater-") for v in votes)
    people = raters(3, 3)
    for v in votes:  # seeded per (rater, task): the answer the simulator's generator gives
        i = int(v["annotator"].split("@")[0].rsplit("-", 1)[1]) - 1
        assert v["choice"] == choice(people[i], i, 3, v["question"], v["pair_id"], v["tuned_side"])[0]
    for q, wanted in SIM_RATERS.items():
        tk = results["tasks"][q]
        assert tk["pushed"] == tk["with_votes"] == tk["complete"] == SIM_PAIRS
        assert tk["votes"] == tk["simulated_votes"] == SIM_PAIRS * wanted
        for table, n in ((results["tables"][q], SIM_PAIRS), (results["votes"][q], SIM_PAIRS * wanted)):
            assert table["all"]["n"] == n == sum(r["n"] for c, r in table.items() if c != "all")
            row = table["all"]
            assert row["wins"] + row["ties"] + row["losses"] == n
            assert row["win"] + row["tie"] + row["loss"] == pytest.approx(1.0)

    again = invoke("simulate", "--seed", "3")
    assert again.exit_code == 0, again.output
    assert "0 simulated A/B answer(s) in total" in again.output  # the queue serves nobody a task twice
    assert json.loads((ab_dir(out) / "simulation.json").read_text())["annotations_submitted"] == 0

    run = make_fake_run(tmp_path)
    shutil.copytree(out, run / "eval")
    html = build_report(run).read_text()
    assert 'id="eval-human-simulated"' in html and 'id="eval-simulation-warning"' in html
    assert "SIMULATED raters" in html
