"""Aesthetic head: LAION state-dict compatibility, the filter, and `photogenic aesthetic train`."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from photogenic.filters.aesthetic import AestheticFilter, load_head, score_embeddings
from photogenic.filters.aesthetic_cli import aesthetic
from photogenic.pipeline.filtering.cascade import FilterSkipped, build_filters
from photogenic.pipeline.core.config import parse_config
from tests.filters.helpers import photo, sample, unit_vectors


class LaionMLP(nn.Module):
    """LAION improved-aesthetic-predictor's MLP (simple_inference.py), minus pytorch-lightning."""

    def __init__(self, input_size):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def laion_normalized(a, axis=-1, order=2):
    """LAION's simple_inference.py `normalized`."""
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def test_laion_state_dict_loads_and_scores_identically(tmp_path):
    torch.manual_seed(1)
    laion = LaionMLP(768).eval()
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(laion.state_dict(), path)
    x = unit_vectors(20, 768) * 3.0  # raw CLIP embeddings are not unit length
    with torch.no_grad():
        expected = laion(torch.from_numpy(laion_normalized(x))).squeeze(-1).numpy()
    # Scored in float64 (so a row's score does not depend on its batch), equal to LAION's float32
    # pipeline up to float32 rounding.
    head = load_head(path)
    ours = score_embeddings(head, x)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(score_embeddings(head, x[5:12]), ours[5:12])
    assert np.array_equal(np.concatenate([score_embeddings(head, x[i:i + 1]) for i in range(len(x))]), ours)
    expected = ours
    f = AestheticFilter(head=str(path), min_score=float(np.median(expected)))
    samples = [sample(photo("coffee")) for _ in range(len(x))]
    for s, v in zip(samples, x):
        s.image_embedding = v
    scores = f.score(samples)
    assert np.array_equal(np.float32(scores["aesthetic_score"]), expected.astype(np.float32))
    verdicts = f.decide(scores)
    assert sum(v is not None for v in verdicts) == int((expected < np.median(expected)).sum())


def test_unnormalised_embeddings_are_normalised_first(tmp_path):
    torch.manual_seed(2)
    path = tmp_path / "head.pth"
    torch.save(LaionMLP(512).state_dict(), path)
    head = load_head(path)
    x = unit_vectors(5, 512)
    assert np.allclose(score_embeddings(head, x * 37.0), score_embeddings(head, x), atol=1e-6)


def test_no_head_skips_the_filter_and_says_so():
    with pytest.raises(FilterSkipped, match="no aesthetic head"):
        AestheticFilter(head=None)
    _, skipped = build_filters(parse_config({}))
    assert "no aesthetic head" in skipped["aesthetic"]


def test_bad_heads_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="head not found"):
        AestheticFilter(head=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(1, 4)}, wrong)
    with pytest.raises(ValueError, match="not a LAION-format aesthetic head"):
        AestheticFilter(head=str(wrong))
    narrow = tmp_path / "narrow.pth"
    torch.save(LaionMLP(512).state_dict(), narrow)
    from photogenic.filters.clip import ClipEmbedder

    with pytest.raises(ValueError, match="takes 512-d"):
        AestheticFilter(head=str(narrow)).check_embedder(ClipEmbedder())


def write_toy_problem(tmp_path, n=240, dim=768):
    """Kept images cluster around one direction, dropped ones around another: separable."""
    rng = np.random.default_rng(3)
    centres = unit_vectors(2, dim, seed=4)
    keep = rng.random(n) < 0.5
    x = centres[keep.astype(int)] + rng.normal(scale=1.5 / np.sqrt(dim), size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    keys = [f"k{i:04d}" for i in range(n)]
    emb = tmp_path / "embeddings"
    emb.mkdir()
    pq.write_table(pa.table({"key": keys, "model": ["tiny-random/random"] * n,
                             "image_embedding": pa.array(x.tolist(), pa.list_(pa.float32()))}), emb / "part-0.parquet")
    decisions = tmp_path / "decisions.parquet"  # the shape `photogenic review pull` writes (pass 1)
    pq.write_table(pa.table({
        "key": keys + ["unknown-key", "incomplete"], "keep": keep.tolist() + [True, False],
        "mean_rating": pa.array([None] * (n + 2), pa.float64()), "complete": [True] * (n + 1) + [False],
    }), decisions)
    return emb, decisions, x, keep


def test_aesthetic_train_learns_a_separable_toy_problem(tmp_path):
    emb, decisions, x, keep = write_toy_problem(tmp_path)
    out = tmp_path / "head.pth"
    result = CliRunner().invoke(aesthetic, ["train", "--embeddings", str(emb), "--labels", str(decisions),
                                            "--out", str(out), "--epochs", "60"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "head.pth.json").read_text())
    assert meta["target"] == "keep" and meta["unmatched_labels"] == 1 and meta["meaningless"] is True
    assert meta["metrics"]["val_accuracy"] >= 0.9, meta
    scores = score_embeddings(load_head(out), x)  # the saved file is a plain LAION-format state dict
    assert ((scores >= 0.5) == keep).mean() >= 0.9
    assert set(torch.load(out, weights_only=True)) == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


def test_aesthetic_train_refuses_unusable_labels(tmp_path):
    emb, _, _, _ = write_toy_problem(tmp_path, n=20)
    same = tmp_path / "same.csv"
    same.write_text("key,rating\n" + "".join(f"k{i:04d},5\n" for i in range(20)))
    result = CliRunner().invoke(aesthetic, ["train", "--embeddings", str(emb), "--labels", str(same),
                                            "--out", str(tmp_path / "h.pth")])
    assert result.exit_code != 0 and "nothing to learn" in result.output
    none = tmp_path / "none.csv"
    none.write_text("key,colour\nk0000,red\n")
    result = CliRunner().invoke(aesthetic, ["train", "--embeddings", str(emb), "--labels", str(none),
                                            "--out", str(tmp_path / "h.pth")])
    assert result.exit_code != 0 and "no label column" in result.output


def test_cost_hint_follows_the_embedding_model_the_head_was_trained_on(tmp_path):
    """A head's cost is the CLIP embedding it waits for: a head trained on tiny-random embeddings
    sorts before OCR in the static order, a LAION head (no metadata: ViT-L-14) after it."""
    from photogenic.filters.aesthetic_cli import save_head
    from photogenic.filters.aesthetic import build_head
    from photogenic.filters.clip import EMBEDDING_COST

    laion = tmp_path / "laion.pth"
    torch.save(LaionMLP(768).state_dict(), laion)
    tiny = tmp_path / "tiny.pth"
    save_head(build_head(768), tiny, {"embedding_model": "tiny-random/random"})
    assert AestheticFilter(head=str(laion)).cost_hint == EMBEDDING_COST["ViT-L-14"]
    assert AestheticFilter(head=str(tiny)).cost_hint == EMBEDDING_COST["tiny-random"]

    config = parse_config({"filters": {"aesthetic": {"head": str(tiny), "min_score": 5.0}}})
    names = [f.name for f in build_filters(config)[0]]
    assert names.index("aesthetic") < min(names.index("ocr"), names.index("offensive"))
    config = parse_config({"filters": {"aesthetic": {"head": str(laion), "min_score": 5.0}}})
    names = [f.name for f in build_filters(config)[0]]
    assert names.index("aesthetic") > max(names.index("ocr"), names.index("offensive"))
