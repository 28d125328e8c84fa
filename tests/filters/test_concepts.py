"""Concept tags: the caption-keyword tagger and CLIP zero-shot over the taxonomy's prompts."""
import pytest

from photogenic.filters.clip import ClipEmbedder
from photogenic.filters.concepts import ConceptFilter, load_taxonomy
from photogenic.filters.base import Need
from tests.filters.helpers import CAPTIONS, photo, sample


@pytest.mark.parametrize("caption,concept", [
    ("portrait of a smiling woman astronaut", "portraits"),
    ("a cup of coffee on a saucer, food and drink", "food"),
    ("a tabby cat looking up, pet animal", "animals"),
    ("storm clouds over a field, a moody landscape", "landscapes"),
    ("an orange flower in full bloom", "plants"),
    ("weathered wooden planks of an old house", "architecture"),
    ("a rocket on the launch pad, space vehicle", "vehicles"),
    ("a painting of elephants in blue tones, artwork", "art"),
    ("Two Cats and three DOGS", "animals"),
    ("qwerty zxcv", "other"),
    (None, "other"),
])
def test_keyword_tagger(caption, concept):
    f = ConceptFilter(zero_shot="off")
    assert f.need == Need.CAPTION
    scores = f.score([sample(photo("coffee"), caption)])
    assert scores["concept"] == [concept]
    assert (scores["concept_score"][0] > 0) == (concept != "other")
    assert f.decide(scores) == [None]  # concepts never reject


def test_shipped_taxonomy_has_the_expected_concepts():
    names = load_taxonomy().names
    for needed in ("portraits", "food", "animals", "landscapes", "plants", "architecture", "vehicles", "art"):
        assert needed in names
    assert load_taxonomy().fallback == "other"
    assert all(c.keywords and c.prompts for c in load_taxonomy().concepts)


def test_bad_taxonomies_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="taxonomy not found"):
        ConceptFilter(taxonomy=str(tmp_path / "none.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[concepts.cats]\nkeywords = ["cat"]\ncolour = "red"\n')
    with pytest.raises(ValueError, match="unknown keys"):
        ConceptFilter(taxonomy=str(bad))
    bad.write_text('[concepts.empty]\n')
    with pytest.raises(ValueError, match="neither keywords nor prompts"):
        ConceptFilter(taxonomy=str(bad))


def test_zero_shot_runs_clip_over_prompts_and_is_marked_meaningless_with_tiny_random():
    embedder = ClipEmbedder()
    embedder.setup()  # what the cascade does before the first embedding filter
    f = ConceptFilter(zero_shot="on", min_zero_shot_prob=0.0)
    f.bind_embedder(embedder)  # what the cascade hook does; without it the process's active embedder is used
    samples = [sample(photo(n), c) for n, c in [("chelsea", "qwerty"), ("rocket", "a rocket, space vehicle")]]
    embedder.embed(samples)
    scores = f.score(samples)
    names = load_taxonomy().names
    assert all(c in names for c in scores["concept"])  # zero-shot picks a concept even without keywords
    assert all(0 < s <= 1 for s in scores["concept_score"])
    assert f.prompt_matrix().shape == (len(names), 768)
    assert f.meaningless  # random CLIP weights: zero-shot tags mean nothing, and the run says so


def test_auto_uses_keywords_only_with_tiny_random():
    ClipEmbedder().setup()
    f = ConceptFilter(zero_shot="auto")
    samples = [sample(photo("chelsea"), "qwerty"), sample(photo("coffee"), CAPTIONS["coffee"])]
    scores = f.score(samples)
    assert scores["concept"] == ["other", "food"]
    assert not f.meaningless
