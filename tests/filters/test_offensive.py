"""Offensive content: the real NudeNet ONNX detector and the caption term list."""
import pytest

from photogenic.filters.offensive import NUDENET_LABELS, OffensiveFilter, load_terms, terms_pattern
from tests.filters.helpers import CAPTIONS, PHOTOS, photo, sample


@pytest.fixture(scope="module")
def offensive():
    f = OffensiveFilter()
    f.setup()
    return f


def test_nudenet_runs_for_real_and_clean_photos_pass(offensive):
    names = list(PHOTOS)
    images = [photo(n) for n in names]
    per_class = offensive.scorer.class_scores(images)
    assert per_class.shape == (len(names), len(NUDENET_LABELS))
    # The real detector finds the astronaut's face, and nothing exposed on any of these photos.
    assert per_class[names.index("astronaut"), NUDENET_LABELS.index("FACE_FEMALE")] > 0.5
    scores = offensive.score([sample(im, CAPTIONS[n]) for n, im in zip(names, images)])
    assert all(0.0 <= s < offensive.max_nsfw for s in scores["nsfw_score"]), scores
    assert scores["offensive_term"] == [None] * len(names)
    assert offensive.decide(scores) == [None] * len(names)


def test_batched_scores_match_one_by_one(offensive):
    images = [photo("coffee"), photo("chelsea"), photo("rocket")]
    batched = offensive.scorer.nsfw_scores(images)
    single = [offensive.scorer.nsfw_scores([im])[0] for im in images]
    assert batched == pytest.approx(single, abs=1e-5)


def test_threshold_decides_on_the_image_score(offensive):
    strict = OffensiveFilter(max_nsfw=0.0)
    scores = {"nsfw_score": [0.01, 0.0], "offensive_term": [None, None]}
    assert strict.decide(scores) == ["nsfw_score 0.01 > 0.0", None]


@pytest.mark.parametrize("caption,term", [
    ("Pornography archive", "pornography"), ("xxx video", "xxx"), ("an EXPLICIT   sex scene", "explicit sex"),
    ("naked", "naked"), ("Essex county fair", None), ("xxxl shirt on sale", None), ("a nudibranch underwater", None),
    (None, None), ("", None),
])
def test_caption_terms_match_whole_words_only(offensive, caption, term):
    got = offensive.caption_term(caption)
    assert got == (term.lower() if term else None)


def test_caption_term_rejects_with_the_term_named(offensive):
    scores = offensive.score([sample(photo("coffee"), "topless beach party"), sample(photo("coffee"), "a cup of coffee")])
    assert scores["offensive_term"] == ["topless", None]
    assert offensive.decide(scores) == ["caption term 'topless'", None]


def test_custom_terms_file(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("# my list\nbanana split  # a phrase\nfoo*\n")
    assert load_terms(path) == ["banana split", "foo*"]
    f = OffensiveFilter(terms_file=str(path))
    assert f.caption_term("a BANANA split") == "banana split"
    assert f.caption_term("foobar") == "foobar" and f.caption_term("barfoo") is None
    assert terms_pattern([]) is None


def test_missing_terms_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="terms_file not found"):
        OffensiveFilter(terms_file=str(tmp_path / "nope.txt"))
