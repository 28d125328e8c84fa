"""CLIP embeddings and score with open_clip's real code path on the built-in tiny-random model."""
import numpy as np
import pytest

import photogenic.filters.clip as clip
from photogenic.filters.clip import (ClipEmbedder, ClipFilter, MissingWeights, embedding_batch, model_label,
                                     read_embeddings)
from photogenic.pipeline.filtering.job import write_embeddings
from photogenic.pipeline.filtering.cascade import Cascade
from photogenic.pipeline.core.config import parse_config
from tests.filters.helpers import CAPTIONS, jpeg, photo, pool_batch, sample


@pytest.fixture(scope="module")
def clip_filter():
    f = ClipFilter()
    f.setup()
    return f


def test_tiny_random_embeds_unit_vectors_and_scores_cosine(clip_filter):
    samples = [sample(photo(n), CAPTIONS[n]) for n in ("astronaut", "coffee")] + [sample(photo("chelsea"), None)]
    scores = clip_filter.score(samples)
    for s in samples:
        assert s.image_embedding.shape == (768,)
        assert np.linalg.norm(s.image_embedding) == pytest.approx(1.0, abs=1e-5)
    assert samples[2].text_embedding is None and scores["clip_score"][2] is None
    for s, score in zip(samples[:2], scores["clip_score"][:2]):
        assert score == pytest.approx(float(s.image_embedding @ s.text_embedding), abs=1e-6)
        assert -1.0 <= score <= 1.0
    assert clip_filter.decide(scores) == [None, None, None]  # min_score unset: scored, not thresholded


def test_tiny_random_is_deterministic_and_marked_meaningless(clip_filter):
    first = clip_filter.embedder.embed_images([photo("rocket")])
    clip._MODELS.clear()  # a fresh process builds the same random weights from the fixed seed
    again = ClipEmbedder()
    again.setup()
    assert np.array_equal(first, again.embed_images([photo("rocket")]))
    assert clip_filter.meaningless and again.meaningless


def test_min_score_threshold():
    f = ClipFilter(min_score=0.2)
    assert f.decide({"clip_score": [0.1, 0.3, None]}) == ["clip_score 0.100 < 0.2", None, None]
    with pytest.raises(ValueError, match="not both"):
        ClipFilter(min_score=0.2, min_score_fraction=0.5)


def test_missing_weights_are_a_clear_error_naming_them(tmp_path):
    missing = tmp_path / "no-such-clip.pt"
    with pytest.raises(MissingWeights, match=str(missing)):
        ClipFilter(model="ViT-B-32", pretrained=str(missing))
    with pytest.raises(MissingWeights, match="needs weights"):
        ClipEmbedder(model="ViT-B-32", pretrained=None)
    with pytest.raises(MissingWeights, match="neither a file nor an open_clip tag"):
        ClipEmbedder(model="ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ClipEmbedder(model="ViT-Nope", pretrained="x.pt")


def test_cascade_embeds_once_and_records_meaningless_scores(tmp_path):
    head = tmp_path / "head.pth"
    import torch
    from photogenic.filters.aesthetic import build_head

    torch.manual_seed(0)
    torch.save(build_head(768).state_dict(), head)
    config = parse_config({"filters": {"aesthetic": {"head": str(head)}, "concepts": {"zero_shot": "on"}}})
    cascade = Cascade(config)
    names = ["astronaut", "coffee", "chelsea"]
    out = cascade.process(pool_batch([(n, CAPTIONS[n], jpeg(photo(n))) for n in names])).to_pylist()
    assert [r["reject_reason"] for r in out] == ["", "", ""]
    assert all(r["clip_score"] is not None and r["aesthetic_score"] is not None for r in out)
    assert cascade.scored["embed"] == 3  # one embedding per image, shared by clip, aesthetic and concepts
    embedders = {id(f.embedder) for f in cascade.filters if f.embedder is not None}
    assert embedders == {id(cascade.embedder)}
    assert set(cascade.meaningless) >= {"clip_score", "aesthetic_score", "concept", "concept_score"}


def test_saved_embeddings_round_trip(clip_filter, tmp_path):
    samples = [sample(photo(n), CAPTIONS[n], key=n) for n in ("astronaut", "rocket")]
    clip_filter.score(samples)
    batch = embedding_batch(samples + [sample(photo("coffee"), "no embedding", key="skipped")],
                            model_label(clip_filter.embedder))
    assert batch.num_rows == 2
    write_embeddings([batch], tmp_path / "part-0.parquet")
    keys, vectors, model = read_embeddings(tmp_path)
    assert keys == ["astronaut", "rocket"] and model == "tiny-random/random"
    assert np.allclose(vectors[0], samples[0].image_embedding)


def test_a_local_checkpoint_path_loads_real_weights(clip_filter, tmp_path):
    """The `pretrained = "/path/to/checkpoint"` route, through open_clip's own loader: a model
    config registered under another name, weights saved from tiny-random, same embeddings back."""
    import shutil

    import open_clip
    import torch

    shutil.copy(clip.TINY_CONFIG, tmp_path / "tiny-checkpoint-test.json")
    open_clip.add_model_config(tmp_path / "tiny-checkpoint-test.json")
    weights = tmp_path / "weights.pt"
    torch.save(clip_filter.embedder.model.state_dict(), weights)
    loaded = ClipEmbedder(model="tiny-checkpoint-test", pretrained=str(weights))
    loaded.setup()
    assert not loaded.meaningless
    expected = clip_filter.embedder.embed_images([photo("coffee")])
    assert np.allclose(loaded.embed_images([photo("coffee")]), expected, atol=1e-6)


def test_a_local_dir_model_loads_offline(clip_filter, tmp_path, monkeypatch):
    """open_clip's `local-dir:/path` name: a folder with open_clip_config.json and the weights
    (here the tiny-random model saved as open_clip_model.safetensors), no hub needed."""
    import json

    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    config = json.loads(clip.TINY_CONFIG.read_text())
    (folder / clip.LOCAL_DIR_CONFIG).write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    with pytest.raises(MissingWeights, match="no CLIP weights"):  # never silently random weights
        ClipEmbedder(model=f"local-dir:{folder}")
    state = {k: v.contiguous() for k, v in clip_filter.embedder.model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")
    name = f"local-dir:{folder}"
    f = ClipFilter(model=name)
    f.setup()
    assert not f.meaningless and f.embedder.dim == 768 and f.pixel_size == 64
    expected = clip_filter.embedder.embed_images([photo("coffee")])
    assert np.allclose(f.embedder.embed_images([photo("coffee")]), expected, atol=1e-6)
    texts = f.embedder.embed_texts([CAPTIONS["coffee"]])
    assert np.allclose(texts, clip_filter.embedder.embed_texts([CAPTIONS["coffee"]]), atol=1e-6)
    assert model_label(f.embedder) == name
    with pytest.raises(MissingWeights, match="not found"):
        ClipEmbedder(model=f"local-dir:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="leave pretrained unset"):
        ClipEmbedder(model=name, pretrained="laion2b_s34b_b79k")


def test_hf_hub_names_pass_validation_without_loading():
    # Checked by form only (no network here): the hub is reached when the model loads.
    from photogenic.pipeline.core.config import parse_config

    name = "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    clip.check_weights(name, None)
    f = ClipFilter(model=name, min_score=0.2)
    assert f.embedder.model is None and f.rejects
    assert parse_config({"filters": {"clip": {"model": name}}}).filters.clip.model == name
    for bad in ("hf-hub:", "hf-hub:no-slash", "hf-hub:a/b/c"):
        with pytest.raises(ValueError, match="hf-hub:ORG/REPO"):
            clip.check_weights(bad, None)
    with pytest.raises(ValueError, match="leave pretrained unset"):
        clip.check_weights(name, "openai")
