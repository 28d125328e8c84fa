"""Against a real Label Studio: push 1,000 tasks, annotate them through the API as three annotator
users, pull, and check decisions, agreement and gold accuracy against what was submitted; re-push
and re-pull change nothing; pass 2 with simulated specialists and the majority + rating rule."""
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
from tests.annotation.helpers import annotator_store, make_fake_run, submit, write_config

# The session's one Label Studio server (fixtures ls_config, ls_server, ls_client) is shared by
# every review test file through this plugin, so it starts once per test session.
pytest_plugins = ["tests.annotation.helpers"]

pytestmark = pytest.mark.slow
N_TASKS = 1000
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
    """A 1,000-task pass 1, pushed, annotated by three users, pulled."""
    from photogenic.annotation.lsclient import Client

    base = tmp_path_factory.mktemp("review-e2e")
    run = base / "run"
    keys = make_fake_run(run, N_TASKS)
    gold = {k: i % 3 == 0 for i, k in enumerate(keys[::40])}  # 25 gold keys, a third keeps
    gold_path = base / "gold.csv"
    gold_path.write_text("key,keep\n" + "".join(f"{k},{str(v).lower()}\n" for k, v in gold.items()))
    cfg_path = write_config(base / "photogenic.toml", ls_config,
                            "import_batch_size = 300\n[review.pass1]\noverlap_fraction = 0.1\n"
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
        key = task["data"]["key"]
        for j in range(min(task["overlap"], 3)):
            who = (i + j) % 3
            index = gold_seen[who] if key in gold else 0
            if key in gold:
                gold_seen[who] += 1
            keep = _answer(key, who, gold, index)
            jobs.append((users[who]["token"], task["id"], keep))
            submitted.append({"key": key, "annotator": ANNOTATORS[who], "keep": keep,
                              "mean_rating": None, "lead_time": 2.0})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: submit(client, *job), jobs))
    quality = pull(run, 1, client, config)
    return {"run": run, "keys": keys, "gold": gold, "config": config, "cfg_path": cfg_path,
            "client": client, "push": pushed, "submitted": submitted, "quality": quality, "tasks": tasks}


def test_review_push_one_task_per_key_with_images_served_by_url(pass1, ls_config):
    client, pid = pass1["client"], pass1["push"].project_id
    tasks = client.tasks(pid, fields="task_only")
    keys = [t["data"]["key"] for t in tasks]
    assert len(keys) == N_TASKS and sorted(keys) == sorted(pass1["keys"])
    assert pass1["push"].batches == 4 and pass1["push"].n_gold == len(pass1["gold"])
    image = tasks[0]["data"]["image"]
    assert image.startswith("/data/local-files/?d=") and "base64" not in image
    user = annotator_store(ls_config).ensure(client, ANNOTATORS[0])
    resp = requests.get(client.url + image, headers={"Authorization": f"Token {user['token']}"}, timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert resp.content[:2] == b"\xff\xd8"
    # Nothing went through Label Studio's upload folder.
    upload = Path(ls_config.data_dir) / "media" / "upload"
    assert not upload.exists() or not any(upload.rglob("*.*"))
    # Overlap as configured in the project: ~10% of tasks to two annotators, gold to three.
    overlaps = {t["data"]["key"]: t["overlap"] for t in tasks}
    assert all(overlaps[k] == 3 for k in pass1["gold"])
    assert 80 <= sum(v == 2 for v in overlaps.values()) <= 120


def test_review_pull_has_every_submitted_annotation_and_decides_by_any_rule(pass1):
    run = pass1["run"]
    ann = pq.read_table(run / "review" / "pass1" / "annotations.parquet").to_pylist()
    got = sorted((r["key"], r["annotator"], r["keep"]) for r in ann)
    want = sorted((r["key"], r["annotator"], r["keep"]) for r in pass1["submitted"])
    assert got == want
    assert len({r["annotation_id"] for r in ann}) == len(ann)
    assert not any(r["simulated"] for r in ann)  # people (here: the test) answered pass 1
    votes = defaultdict(list)
    for r in pass1["submitted"]:
        votes[r["key"]].append(r["keep"])
    dec = {r["key"]: r for r in pq.read_table(run / "review" / "pass1" / "decisions.parquet").to_pylist()}
    assert len(dec) == N_TASKS
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


def test_review_repush_and_repull_change_nothing(pass1):
    run, client, config = pass1["run"], pass1["client"], pass1["config"]
    out = run / "review" / "pass1"
    before = {name: pq.read_table(out / name) for name in ("annotations.parquet", "decisions.parquet")}
    again = push(run, 1, client, config, gold_file=None, echo=lambda m: None)
    assert again.n_imported == 0 and again.n_in_project == N_TASKS
    assert again.project_id == pass1["push"].project_id
    tasks = client.tasks(again.project_id, fields="task_only")
    assert sorted(t["id"] for t in tasks) == sorted(t["id"] for t in pass1["tasks"])
    pull(run, 1, client, config)
    for name, table in before.items():
        assert pq.read_table(out / name).equals(table), name


def test_review_status_cli_prints_progress_and_quality(pass1):
    result = CliRunner().invoke(review, ["status", "--run", str(pass1["run"]), "--config",
                                         str(pass1["cfg_path"])])
    assert result.exit_code == 0, result.output
    n_ann = len(pass1["submitted"])
    assert f"tasks complete {N_TASKS}/{N_TASKS}" in result.output
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
