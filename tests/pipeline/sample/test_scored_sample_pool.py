"""Issue 3's acceptance on the sample pool: the default filter job (Spark, every model filter)."""
import json

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def scored(scored_run, sample_pool):
    rows = pq.read_table(scored_run / "scores").to_pylist()
    truth = json.loads((sample_pool / "ground_truth.json").read_text())["samples"]
    funnel = json.loads((scored_run / "scores" / "_funnel.json").read_text())
    return rows, truth, funnel


def of_kind(scored, kind):
    rows, truth, _ = scored
    picked = [r for r in rows if truth[r["key"]]["kind"] == kind]
    assert picked, f"the sample pool has no {kind} rows"
    return [(r, truth[r["key"]]) for r in picked]


def test_heavy_text_is_rejected_ocr_with_word_counts_within_25_percent(scored):
    for row, truth in of_kind(scored, "text_heavy"):
        assert truth["words"] >= 10
        assert row["reject_reason"] == "ocr", (row["reject_detail"], row["ocr_text"])
        assert abs(row["ocr_words"] - truth["words"]) <= 0.25 * truth["words"], (row["ocr_text"], truth["text"])


def test_one_or_two_words_pass(scored):
    for row, truth in of_kind(scored, "text_light"):
        assert row["passed"], (row["reject_reason"], row["reject_detail"])
        assert row["ocr_words"] <= 2


def test_clean_photos_pass_every_model_filter_at_defaults(scored):
    for row, _ in of_kind(scored, "clean"):
        assert row["passed"], (row["key"], row["reject_reason"], row["reject_detail"])
        assert row["nsfw_score"] is not None and row["nsfw_score"] < 0.5
        assert row["ocr_words"] is not None and row["clip_score"] is not None
        assert row["concept"] is not None


def test_clean_photos_get_their_caption_concepts(scored):
    tagged = [r["concept"] for r, _ in of_kind(scored, "clean")]
    assert tagged.count("other") < len(tagged) // 4  # the pool's captions name their subjects
    assert {"landscapes", "plants", "portraits", "food", "animals", "vehicles"} <= set(tagged)


def test_the_run_records_meaningless_scores_and_the_skipped_aesthetic_filter(scored):
    _, _, funnel = scored
    assert "clip_score" in funnel["meaningless"]  # tiny-random CLIP
    assert "no aesthetic head" in funnel["skipped_filters"]["aesthetic"]
