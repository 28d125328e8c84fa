"""Three SIMULATED annotators work pass 1 through Label Studio's own queue (/next) on a real
server: every grid task ends with exactly the annotations its overlap asks for, from different
annotators (the overlap cohort twice, gold grids three times, the rest once), every annotator
gets work, and the pull has a decision per image with as many votes as its task required."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from photogenic.annotation.lsclient import Client
from photogenic.annotation.pull import pull
from photogenic.annotation.push import push
from photogenic.annotation.simulate import simulate
from photogenic.pipeline.core.config import load_config
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import annotator_store, make_fake_run, write_config

pytest_plugins = ["tests.annotation.helpers"]

pytestmark = pytest.mark.slow
IMAGES = 320  # 20 grids of 16


def test_three_simulated_annotators_through_the_queue_meet_the_configured_overlap(tmp_path, ls_server, ls_config):
    run = tmp_path / "run"
    keys = make_fake_run(run, IMAGES, prefix="q")
    gold = keys[:16]  # one gold grid
    gold_path = tmp_path / "gold.csv"
    gold_path.write_text("key,keep\n" + "".join(f"{k},{str(i % 4 == 0).lower()}\n" for i, k in enumerate(gold)))
    cfg = write_config(tmp_path / "c.toml", ls_config, "[review.pass1]\noverlap_fraction = 0.3\n"
                       "overlap_annotators = 2\ngold_annotators = 3\n")
    config = load_config(cfg).review
    client = Client(ls_server)
    pushed = push(run, 1, client, config, gold_file=str(gold_path), echo=lambda m: None)
    assert (pushed.n_tasks, pushed.n_in_project) == (20, IMAGES)

    summary = simulate(run, 1, client, config, annotators=3, seed=7, store=annotator_store(ls_config),
                       echo=lambda m: None)
    assert summary["simulated"] and "queue" in summary["via"]
    assert all(n > 0 for n in summary["annotations_per_annotator"].values())  # everyone got work

    tasks = client.tasks(pushed.project_id, fields="all")
    overlaps = Counter(t["overlap"] for t in tasks)
    gold_task = next(t for t in tasks if t["data"]["keys"] == gold)
    assert gold_task["overlap"] == 3 and overlaps[2] >= 4 and overlaps[1] >= 10
    for t in tasks:
        authors = [a["completed_by"] for a in t["annotations"]]
        assert len(authors) == t["overlap"] == len(set(authors)), t["id"]  # exactly its overlap, all different
        assert t["is_labeled"]
    assert summary["annotations_submitted"] == sum(t["overlap"] for t in tasks)

    pull(run, 1, client, config)
    dec = pq.read_table(run / "review" / "pass1" / "decisions.parquet").to_pylist()
    assert len(dec) == IMAGES and all(d["complete"] and d["n_annotations"] == d["required_annotations"] for d in dec)
    ann = pq.read_table(run / "review" / "pass1" / "annotations.parquet").to_pylist()
    assert all(a["simulated"] and a["annotator"].startswith("sim-generalist-") for a in ann)
    q = json.loads((run / "review" / "pass1" / "quality.json").read_text())
    gold_rows = {a["annotator"]: a for a in q["annotators"]}
    assert len(gold_rows) == 3 and all(a["gold_tasks"] == 16 for a in gold_rows.values())  # gold per image
    again = simulate(run, 1, client, config, annotators=3, seed=7, store=annotator_store(ls_config),
                     echo=lambda m: None)
    assert again["annotations_submitted"] == 0  # the queue serves nobody a task twice
