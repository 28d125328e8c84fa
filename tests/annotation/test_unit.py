"""Review logic without a server: agreement statistics against published values, decision rules,
annotation parsing, gold files, media names, ETA, the simulation's plan."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from photogenic.pipeline.core.config.review import PassConfig, ReviewConfig
from photogenic.annotation.media import image_url, materialise, media_name
from photogenic.annotation.progress import eta_seconds
from photogenic.annotation.pull import decide, decisions_table, parse_annotation
from photogenic.annotation.push import PushError, build_task, load_gold, score_percentiles
from photogenic.annotation.quality import cohen_kappa, fleiss_kappa, krippendorff_alpha, summarise
from photogenic.annotation.simulate import Tastes, personas, task_items
from photogenic.pipeline.core.config import defaults_toml, parse_config


def test_review_fleiss_kappa_matches_wikipedia_example():
    # Fleiss (1971) example as on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    units = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    kappa, raters, used = fleiss_kappa(units)
    assert (raters, used) == (14, 10)
    assert kappa == pytest.approx(0.210, abs=0.001)


def test_review_krippendorff_alpha_matches_published_example():
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability", nominal example: 0.743.
    raters = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[r[i] for r in raters if r[i] is not None] for i in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=0.001)
    assert krippendorff_alpha(units, level="interval") == pytest.approx(0.849, abs=0.001)


def test_review_cohen_kappa_known_value():
    # 2x2 table [[20, 5], [10, 15]]: p_o 0.7, p_e 0.5 -> kappa 0.4.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0


def test_review_decision_rules():
    recall = PassConfig(name="p", rule="any")
    precision = PassConfig(name="p", rule="majority", min_mean_rating=3.5)
    assert decide(1, 3, None, recall) and not decide(0, 2, None, recall)
    assert not decide(0, 0, None, recall)
    assert decide(2, 3, 3.6, precision)
    assert not decide(2, 3, 3.4, precision)  # majority but rating too low
    assert not decide(1, 2, 4.5, precision)  # a tie is not a majority
    assert not decide(2, 3, None, precision)


def _ann(aid, user, keep=None, ratings=None, cancelled=False):
    result = []
    if keep is not None:
        result.append({"from_name": "decision", "type": "choices",
                       "value": {"choices": ["keep" if keep else "drop"]}})
    for name, value in (ratings or {}).items():
        result.append({"from_name": name, "type": "rating", "value": {"rating": value}})
    return {"id": aid, "completed_by": user, "result": result, "was_cancelled": cancelled,
            "lead_time": 4.0, "created_at": "2026-01-01T10:00:00.5Z", "updated_at": "2026-01-01T10:00:01Z"}


def test_review_parse_annotation_and_decisions():
    users = {7: "a@x", 8: "b@x", 9: "c@x"}
    ratings = {"composition": 4, "lighting": 5, "colour": 3, "subject": 4, "background": 4}
    rows = [
        parse_annotation("k1", 1, _ann(1, 7, True, ratings), 2, users, {"k1": True}),
        parse_annotation("k1", 1, _ann(2, {"id": 8}, True, ratings), 2, users, {"k1": True}),
        parse_annotation("k1", 1, _ann(3, 9, False, {k: 1 for k in ratings}), 2, users, {"k1": True}),
        parse_annotation("k2", 2, _ann(4, 7, None, cancelled=True), 2, users, {}),
    ]
    assert rows[0]["annotator"] == "a@x" and rows[1]["annotator"] == "b@x"
    assert rows[0]["mean_rating"] == pytest.approx(4.0) and rows[0]["is_gold"] and rows[0]["gold_keep"]
    assert rows[3]["skipped"] and rows[3]["keep"] is None
    table = decisions_table(["k1", "k2"], rows, {"k1": 3, "k2": 3},
                            PassConfig(name="p", rule="majority", min_mean_rating=3.0), {"k1": True})
    d = {r["key"]: r for r in table.to_pylist()}
    assert d["k1"]["keep"] and d["k1"]["n_keep"] == 2 and d["k1"]["n_annotations"] == 3
    assert d["k1"]["mean_rating"] == pytest.approx((4 + 4 + 1) / 3) and d["k1"]["complete"]
    assert not d["k2"]["keep"] and d["k2"]["n_annotations"] == 0 and not d["k2"]["complete"]
    q = summarise(rows, {"k1": True})
    acc = {a["annotator"]: a["gold_accuracy"] for a in q["annotators"]}
    assert acc == {"a@x": 1.0, "b@x": 1.0, "c@x": 0.0}


def test_review_gold_file_must_name_keys_of_the_pass(tmp_path):
    path = tmp_path / "gold.csv"
    path.write_text("key,keep\nk1,true\nk2,false\n")
    assert load_gold(path, {"k1", "k2", "k3"}) == {"k1": True, "k2": False}
    with pytest.raises(PushError, match="not in this pass"):
        load_gold(path, {"k1"})
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"key": ["k1"]}), bad)
    with pytest.raises(PushError, match="lacks column"):
        load_gold(bad, {"k1"})
    with pytest.raises(PushError, match="not found"):
        load_gold(tmp_path / "missing.csv", {"k1"})


def test_review_media_names_and_urls(tmp_path):
    assert media_name("abc_01.x") == "abc_01.x.jpg"
    unsafe = media_name("../etc/passwd")
    assert "/" not in unsafe and unsafe.startswith("k-") and unsafe == media_name("../etc/passwd")
    assert image_url("r1", "a b.jpg") == "/data/local-files/?d=r1/a%20b.jpg"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert materialise("k", str(junk), tmp_path / "media", 256) is None  # unreadable: skipped, no crash
    assert materialise("k", str(tmp_path / "nope.jpg"), tmp_path / "media", 256) is None


def test_review_task_carries_scores_not_pixels():
    rows = [{"key": "k1", "source": "/x.tar::k1.jpg", "caption": "c", "aesthetic_score": 6.5,
             "clip_score": float("nan"), "engagement": 0.3},
            {"key": "k2", "source": "/x.tar::k2.jpg", "aesthetic_score": 4.0},
            {"key": "k3", "source": "/x.tar::k3.jpg", "aesthetic_score": None}]
    percentiles = score_percentiles(rows)
    assert percentiles == {"k2": 0.0, "k1": 1.0}  # Label Studio wants prediction scores in [0, 1]
    task = build_task(rows[0], "/data/local-files/?d=r/k1.jpg", 1, percentiles["k1"])
    assert task["data"]["image"].startswith("/data/local-files/")
    assert task["data"]["clip_score"] is None  # NaN is not JSON
    assert task["data"]["aesthetic_score"] == 6.5
    assert task["predictions"][0]["score"] == 1.0 and task["predictions"][0]["result"] == []
    assert "predictions" not in build_task(rows[2], "/u", 1, percentiles.get("k3"))
    assert "source" not in task["data"]


def test_review_eta_from_recent_rate():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    created = [now - timedelta(seconds=10 * i) for i in range(11)]  # 10 annotations in 100 s
    rate, eta = eta_seconds(created, remaining=50, now=now)
    assert rate == pytest.approx(360.0) and eta == pytest.approx(500.0)
    assert eta_seconds(created, remaining=0, now=now) == (None, 0.0)
    assert eta_seconds(created[:1], remaining=5, now=now) == (None, None)


def test_review_simulated_answers_are_seeded_per_annotator_and_image_single_and_grid():
    items = [{"key": f"k{i}", "aesthetic_score": float(i % 17), "engagement": (i * 7) % 11 / 10}
             for i in range(400)]
    people = personas(1, 3, seed=5)
    assert len({p.email for p in people}) == 3
    a, b = Tastes(items, people, 1, seed=5), Tastes(list(reversed(items)), people, 1, seed=5)
    single = [a.answer(i, it) for i in range(3) for it in items]
    assert single == [b.answer(i, it) for i in range(3) for it in items]  # order of images is irrelevant
    keep_share = sum(x["keeps"][0] for x in single) / len(single)
    assert 0.03 < keep_share < 0.25  # aimed at roughly 1/10
    grid = {"key": "grid-x", "keys": [it["key"] for it in items[:16]], "images": items[:16]}
    answer = a.answer(0, grid)
    assert answer["keeps"] == [a.answer(0, it)["keeps"][0] for it in items[:16]]  # same taste per image
    assert {r["from_name"] for r in answer["result"]} == {f"keep_{s}" for s, k in enumerate(answer["keeps"]) if k}
    assert task_items(grid) == items[:16] and task_items(items[0]) == [items[0]]


def test_review_config_section_round_trips():
    assert "[[review.passes]]" in defaults_toml()
    cfg = parse_config({"review": {"port": 9000, "pass2": {"min_mean_rating": 4.0, "overlap_annotators": 5}}})
    assert cfg.review.pass_config(2).min_mean_rating == 4.0 and cfg.review.port == 9000
    assert ReviewConfig().pass_config(1).rule == "any" and ReviewConfig().pass_config("pass2").rule == "majority"
    with pytest.raises(Exception, match="unknown key"):
        parse_config({"review": {"pass1": {"bogus": 1}}})


def test_review_ledger_is_trusted_only_when_no_batch_was_in_flight(tmp_path):
    from photogenic.annotation.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger", project_id=7)
    assert ledger.read() is None  # never synced with the server
    ledger.rebuild({"a": 1})
    ledger.begin(2)
    assert ledger.read() is None  # a batch may or may not have landed: ask the server
    ledger.commit(["b", "c"], [2, 3])
    assert ledger.read() == {"a": 1, "b": 2, "c": 3}
    assert Ledger(tmp_path / "ledger", project_id=8).read() is None  # another project
    ledger.rebuild({"a": 1, "b": 2})
    assert ledger.read() == {"a": 1, "b": 2} and len(list((tmp_path / "ledger").glob("part-*"))) == 1
