"""Against a real Label Studio: push 1,000 images as pass-1 grid tasks (16 a task), annotate them
through the API as three annotator users, pull, and check the per-image decisions, agreement and
gold accuracy against what was submitted; re-push and re-pull change nothing; an annotation made
after a pull arrives with the next, incremental pull; pass 2 with simulated specialists and the
majority + rating rule."""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner

from photogenic.annotation.cli import review
from photogenic.annotation.pull import pull
from photogenic.annotation.push import push
from photogenic.annotation.quality import summarise
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import annotator_store, make_fake_run, submit_grid, write_config

# The session's one Label Studio server (fixtures ls_config, ls_server, ls_client) is shared by
# every review test file through this plugin, so it starts once per test session.
pytest_plugins = ["tests.annotation.helpers"]

pytestmark = pytest.mark.slow
N_IMAGES = 1000
GRID = 16
ANNOTATORS = [f"test-annotator-{i}@photogenic.local" for i in range(3)]
# How often each annotator gets a gold answer wrong (annotator 0 never, 2 often).
GOLD_ERROR_EVERY = [0, 5, 2]


def _unit(*parts) -> float:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _answer(key: str, who: int, gold: dict[str, bool], index: int) -> bool:
    if key in gold:
        wrong = GOLD_ERROR_EVERY[who] and index % GOLD_ERROR_EVERY[who] == 0
        return gold[key] != bool(wrong)
    return _unit(key, "quality") < 0.05 or _unit(key, who) < 0.02


@pytest.fixture(scope="module")
def pass1(tmp_path_factory, ls_server, ls_config):
    """1,000 images of pass 1 in grids, pushed, annotated by three users per image, pulled."""
    from photogenic.annotation.lsclient import Client

    base = tmp_path_factory.mktemp("review-e2e")
    run = base / "run"
    keys = make_fake_run(run, N_IMAGES)
    gold = {k: i % 3 == 0 for i, k in enumerate(keys[::40])}  # 25 gold keys, a third keeps
    gold_path = base / "gold.csv"
    gold_path.write_text("key,keep\n" + "".join(f"{k},{str(v).lower()}\n" for k, v in gold.items()))
    cfg_path = write_config(base / "photogenic.toml", ls_config,
                            "import_batch_size = 20\n[review.pass1]\noverlap_fraction = 0.1\n"
                            "overlap_annotators = 2\ngold_annotators = 3\n")
    from photogenic.pipeline.core.config import load_config

    config = load_config(cfg_path).review
    client = Client(ls_server)
    pushed = push(run, 1, client, config, gold_file=str(gold_path), echo=lambda m: None)

    store = annotator_store(ls_config)
    users = [store.ensure(client, email) for email in ANNOTATORS]
    tasks = client.tasks(pushed.project_id, fields="task_only")
    jobs, submitted = [], []
    gold_seen = defaultdict(int)
    for i, task in enumerate(sorted(tasks, key=lambda t: t["id"])):
        for j in range(min(task["overlap"], 3)):
            who = (i + j) % 3
            keeps = []
            for key in task["data"]["keys"]:
                index = gold_seen[who] if key in gold else 0
                if key in gold:
                    gold_seen[who] += 1
                keeps.append(_answer(key, who, gold, index))
                submitted.append({"key": key, "annotator": ANNOTATORS[who], "keep": keeps[-1],
                                  "mean_rating": None, "lead_time": 8.0 / len(task["data"]["keys"])})
            jobs.append((users[who]["token"], task["id"], keeps))
    # A task's annotations one after the other (two at once can leave Label Studio's is_labeled
    # flag behind: each request counts the annotations before the other commits).
    by_task = defaultdict(list)
    for job in jobs:
        by_task[job[1]].append(job)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda group: [submit_grid(client, *job) for job in group], by_task.values()))
    quality = pull(run, 1, client, config)
    return {"run": run, "keys": keys, "gold": gold, "config": config, "cfg_path": cfg_path,
            "client": client, "push": pushed, "submitted": submitted, "quality": quality, "tasks": tasks,
            "users": users}


def test_review_push_grids_of_16_one_task_per_key_with_images_served_by_url(pass1, ls_config):
    client, pid = pass1["client"], pass1["push"].project_id
    tasks = client.tasks(pid, fields="task_only")
    keys = [k for t in tasks for k in t["data"]["keys"]]
    assert len(keys) == N_IMAGES and sorted(keys) == sorted(pass1["keys"])  # each image in one grid
    # 25 gold images share their own 2 grids; 975 others fill 61 grids (the last holds 15).
    assert len(tasks) == 63 and pass1["push"].n_tasks == 63 and pass1["push"].n_in_project == N_IMAGES
    assert sorted(len(t["data"]["keys"]) for t in tasks)[:3] == [9, 15, 16]
    assert pass1["push"].batches == 4 and pass1["push"].n_gold == len(pass1["gold"])
    gold_tasks = [t for t in tasks if set(t["data"]["keys"]) & set(pass1["gold"])]
    assert len(gold_tasks) == 2 and all(set(t["data"]["keys"]) <= set(pass1["gold"]) for t in gold_tasks)
    image = tasks[0]["data"]["images"][0]["url"]
    assert tasks[0]["data"]["images"][0]["key"] == tasks[0]["data"]["keys"][0]
    assert image.startswith("/data/local-files/?d=") and "base64" not in image
    user = annotator_store(ls_config).ensure(client, ANNOTATORS[0])
    resp = requests.get(client.url + image, headers={"Authorization": f"Token {user['token']}"}, timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert resp.content[:2] == b"\xff\xd8"
    # Nothing went through Label Studio's upload folder.
    upload = Path(ls_config.data_dir) / "media" / "upload"
    assert not upload.exists() or not any(upload.rglob("*.*"))
    # Overlap as configured in the project: ~10% of tasks to two annotators, gold to three.
    overlaps = {t["id"]: t["overlap"] for t in tasks}
    assert all(overlaps[t["id"]] == 3 for t in gold_tasks)
    assert 4 <= sum(v == 2 for v in overlaps.values()) <= 8


def test_review_pull_has_every_submitted_annotation_and_decides_by_any_rule(pass1):
    run = pass1["run"]
    ann = pq.read_table(run / "review" / "pass1" / "annotations.parquet").to_pylist()
    got = sorted((r["key"], r["annotator"], r["keep"]) for r in ann)
    want = sorted((r["key"], r["annotator"], r["keep"]) for r in pass1["submitted"])
    assert got == want
    assert len({(r["annotation_id"], r["key"]) for r in ann}) == len(ann)  # a grid answer: a row per image
    assert not any(r["simulated"] for r in ann)  # people (here: the test) answered pass 1
    votes = defaultdict(list)
    for r in pass1["submitted"]:
        votes[r["key"]].append(r["keep"])
    dec = {r["key"]: r for r in pq.read_table(run / "review" / "pass1" / "decisions.parquet").to_pylist()}
    assert len(dec) == N_IMAGES
    assert set(votes) == set(dec)  # every image decided from its own toggles
    for key, vs in votes.items():
        assert dec[key]["keep"] == any(vs) and dec[key]["n_annotations"] == len(vs)
        assert dec[key]["n_keep"] == sum(vs)
    assert dec[pass1["keys"][0]]["source"]  # candidate columns travel along for later stages
    assert (run / "review" / "pass1" / "_SUCCESS").exists()


def test_review_gold_accuracy_and_agreement_match_submissions(pass1):
    q = pass1["quality"]
    gold = pass1["gold"]
    acc = {a["annotator"]: a["gold_accuracy"] for a in q["annotators"]}
    for name in ANNOTATORS:
        mine = [r for r in pass1["submitted"] if r["annotator"] == name and r["key"] in gold]
        assert len(mine) == len(gold)  # gold tasks went to every annotator
        assert acc[name] == pytest.approx(sum(r["keep"] == gold[r["key"]] for r in mine) / len(mine))
    assert acc[ANNOTATORS[0]] == 1.0 and acc[ANNOTATORS[2]] < acc[ANNOTATORS[1]] < 1.0
    expected = summarise(pass1["submitted"], gold)["agreement"]
    for name in ("overlapping_tasks", "krippendorff_alpha_keep", "fleiss_kappa_keep", "percent_agreement"):
        assert q["agreement"][name] == pytest.approx(expected[name]), name
    by_key = defaultdict(set)
    for r in pass1["submitted"]:
        by_key[r["key"]].add(r["annotator"])
    assert q["agreement"]["overlapping_tasks"] == sum(len(v) >= 2 for v in by_key.values())
    assert len(q["agreement"]["cohen_kappa_pairs"]) == 3


def test_review_repush_and_repull_change_nothing(pass1, monkeypatch):
    import time

    import photogenic.annotation.pull as pull_module

    monkeypatch.setattr(pull_module, "SINCE_MARGIN_S", 0)  # (60 s in use: commits in flight)
    run, client, config = pass1["run"], pass1["client"], pass1["config"]
    out = run / "review" / "pass1"
    before = {name: pq.read_table(out / name) for name in ("annotations.parquet", "decisions.parquet")}
    again = push(run, 1, client, config, gold_file=None, echo=lambda m: None)
    assert again.n_imported == 0 and again.n_in_project == N_IMAGES
    assert again.project_id == pass1["push"].project_id
    tasks = client.tasks(again.project_id, fields="task_only")
    assert sorted(t["id"] for t in tasks) == sorted(t["id"] for t in pass1["tasks"])
    pull(run, 1, client, config)
    time.sleep(1.1)  # the server clock's resolution
    q = pull(run, 1, client, config)
    assert q["pull"]["incremental"] and q["pull"]["tasks_fetched"] == 0  # nothing changed since
    for name, table in before.items():
        assert pq.read_table(out / name).equals(table), name
    full = pull(run, 1, client, config, full=True)
    assert not full["pull"]["incremental"] and full["pull"]["tasks_fetched"] == 63
    for name, table in before.items():
        assert pq.read_table(out / name).equals(table), name


def test_review_status_cli_prints_progress_and_quality(pass1):
    result = CliRunner().invoke(review, ["status", "--run", str(pass1["run"]), "--config",
                                         str(pass1["cfg_path"])])
    assert result.exit_code == 0, result.output
    n_ann = sum(min(t["overlap"], 3) for t in pass1["tasks"])  # Label Studio counts per task
    assert f"tasks complete 63/63 ({N_IMAGES} images)" in result.output
    assert f"annotations {n_ann}/{n_ann}" in result.output and "ETA done" in result.output
    assert "Krippendorff" in result.output and ANNOTATORS[2] in result.output
    assert "pass 2: not pushed yet" in result.output
    data = json.loads(CliRunner().invoke(review, ["status", "--run", str(pass1["run"]), "--config",
                                                  str(pass1["cfg_path"]), "--json"]).output)
    assert data[0]["quality"]["annotators"] == pass1["quality"]["annotators"]


def test_review_pass2_simulated_specialists_and_majority_rule(pass1):
    run, cfg = pass1["run"], str(pass1["cfg_path"])
    pass1_decisions = pq.read_table(run / "review" / "pass1" / "decisions.parquet")
    keepers = pass1_decisions.filter(pass1_decisions["keep"])
    runner = CliRunner()
    res = runner.invoke(review, ["push", "--run", str(run), "--pass", "2", "--config", cfg])
    assert res.exit_code == 0, res.output
    res = runner.invoke(review, ["simulate", "--run", str(run), "--pass", "2", "--config", cfg,
                                 "--annotators", "3", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "SIMULATION" in res.output
    res = runner.invoke(review, ["pull", "--run", str(run), "--pass", "2", "--config", cfg])
    assert res.exit_code == 0, res.output
    out = run / "review" / "pass2"
    dec = pq.read_table(out / "decisions.parquet").to_pylist()
    assert sorted(d["key"] for d in dec) == sorted(keepers["key"].to_pylist())
    ann = pq.read_table(out / "annotations.parquet").to_pylist()
    assert len(ann) == 3 * len(dec)  # pass 2: every task to three specialists
    assert all(r["simulated"] and r["annotator"].startswith("sim-specialist-") for r in ann)
    by_key = defaultdict(list)
    for r in ann:
        assert all(r[n] is not None and 1 <= r[n] <= 5 for n in ("composition", "lighting", "colour",
                                                                 "subject", "background"))
        by_key[r["key"]].append(r)
    for d in dec:
        rs = by_key[d["key"]]
        mean = sum(r["mean_rating"] for r in rs) / len(rs)
        majority = sum(r["keep"] for r in rs) * 2 > len(rs)
        assert d["keep"] == (majority and mean >= 3.5)
        assert d["mean_rating"] == pytest.approx(mean)
    assert 0 < sum(d["keep"] for d in dec) < len(dec)
    assert json.loads((out / "simulation.json").read_text())["simulated"] is True
    res = runner.invoke(review, ["simulate", "--run", str(run), "--pass", "2", "--config", cfg, "--seed", "1"])
    assert "submitted 0 annotation(s)" in res.output  # resumable: nothing submitted twice


def test_review_incremental_pull_takes_new_and_changed_annotations_only_once(pass1, monkeypatch):
    """After a pull, one more annotation lands and one is changed: the next pull fetches only
    tasks updated since the last began, and has each annotation once."""
    import time

    import photogenic.annotation.pull as pull_module

    monkeypatch.setattr(pull_module, "SINCE_MARGIN_S", 0)
    run, client, config = pass1["run"], pass1["client"], pass1["config"]
    out = run / "review" / "pass1"
    pull(run, 1, client, config)
    before = pq.read_table(out / "annotations.parquet").to_pylist()
    tasks = sorted(pass1["tasks"], key=lambda t: t["id"])
    single = next(t for t in tasks if t["overlap"] == 1)  # annotated once, by annotator (i % 3)
    who = next(r["annotator"] for r in before if r["task_id"] == single["id"])
    other = next(u for e, u in zip(ANNOTATORS, pass1["users"]) if e != who)
    time.sleep(1.1)  # the server clock's resolution
    submit_grid(client, other["token"], single["id"], [True] * len(single["data"]["keys"]))
    mine = next(r for r in before if r["task_id"] == tasks[-1]["id"])
    client.patch(f"/api/annotations/{mine['annotation_id']}/", json={"result": [
        {"from_name": "keep_0", "to_name": "image_0", "type": "choices", "value": {"choices": ["keep"]}}]})
    q = pull(run, 1, client, config)
    assert q["pull"]["incremental"] and q["pull"]["tasks_fetched"] == 2
    after = pq.read_table(out / "annotations.parquet").to_pylist()
    ids = [(r["annotation_id"], r["key"]) for r in after]
    assert len(ids) == len(set(ids)) == len(before) + len(single["data"]["keys"])
    assert all(r["keep"] for r in after if r["task_id"] == single["id"] and r["annotator"] != who)
    changed = {r["key"]: r["keep"] for r in after if r["annotation_id"] == mine["annotation_id"]}
    assert changed[tasks[-1]["data"]["keys"][0]] is True
    assert not any(changed[k] for k in tasks[-1]["data"]["keys"][1:])
    full = pull(run, 1, client, config, full=True)  # reading everything again agrees
    assert pq.read_table(out / "annotations.parquet").to_pylist() == after
    assert full["n_annotations"] == len(after)
