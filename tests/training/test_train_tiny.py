"""The tiny offline base model: a real diffusers pipeline with the real CLIP tokenizer."""
from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from photogenic.pipeline.cli import cli


def test_make_tiny_base_loads_and_generates(tmp_path):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    torch.set_num_threads(1)
    result = CliRunner().invoke(cli, ["train", "--make-tiny-base", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "base" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "base")
    assert isinstance(pipe, StableDiffusionPipeline)
    images = pipe("a photo of a cat", num_inference_steps=2, height=64, width=64,
                  generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_tokenizer_matches_open_clip(tmp_path):
    import open_clip
    from transformers import CLIPTokenizer

    from photogenic.training.tiny import write_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok"))
    ref = open_clip.get_tokenizer("ViT-B-32")
    for text in ["a photo of a cat", "Golden-hour portrait, 85mm f/1.4!", "naïve café"]:
        ids = tok(text).input_ids
        assert ids == ref([text])[0][: len(ids)].tolist()
    assert len(tok) == 49408


def test_train_cli_gives_clear_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "missing --base-model, --out" in result.output
    (tmp_path / "notamodel").mkdir()
    result = runner.invoke(cli, ["train", "--data", str(tmp_path), "--base-model",
                                 str(tmp_path / "notamodel"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a diffusers directory" in result.output
