"""A tiny Stable-Diffusion-style base model with random weights, built offline.

It exists for tests and the CPU demo: the code paths (diffusers pipeline, VAE, CLIP text encoder,
CLIP tokenizer, scheduler) are the real ones, the weights are random, so images it makes are
noise. The tokenizer is the real CLIP BPE tokenizer, rebuilt from the vocabulary open_clip ships.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from photogenic.pipeline.core.layout import ModelDir
from photogenic.pipeline.core.runio import publishing

# CLIP's BPE: 256 byte symbols, the same with an end-of-word mark, 48,894 merges, 2 specials.
CLIP_VOCAB_SIZE = 49408
_N_MERGES = 49152 - 256 - 2
TINY_RESOLUTION = 64  # pixels; the VAE downsamples 8x, like Stable Diffusion's
TINY_MARKER = "TINY_RANDOM_MODEL.txt"  # at the model's root: its images are meaningless


def _bytes_to_unicode() -> dict[int, str]:
    from open_clip.tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def clip_bpe_path() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"open_clip's BPE vocabulary is missing: {path}")
    return path


def write_clip_tokenizer(directory: str | Path, model_max_length: int = 77) -> Path:
    """Write vocab.json + merges.txt for `transformers.CLIPTokenizer` from open_clip's BPE file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {token: i for i, token in enumerate(vocab)}
    assert len(encoder) == CLIP_VOCAB_SIZE, len(encoder)
    (directory / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


def _components(seed: int):
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    # Four VAE blocks: 8x downsampling, so latents have SD's geometry (64 px -> 8x8x4).
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return unet, vae, text_encoder, scheduler


def make_tiny_base(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny `StableDiffusionPipeline` directory (random weights, seeded) and return it.

    Loads with `DiffusionPipeline.from_pretrained(directory)`; generates 64x64 images on CPU.
    Written to a temp folder and renamed, so a killed call leaves no half model behind.
    """
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    directory = Path(directory)
    if ModelDir(directory).model_index.exists():
        return directory
    with publishing(directory) as tmp:  # replaces an earlier, unfinished write
        write_clip_tokenizer(tmp / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(tmp / "tokenizer")
        unet, vae, text_encoder, scheduler = _components(seed)
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / TINY_MARKER).write_text(
            "Random weights for tests and the CPU demo; images it makes are meaningless.\n"
        )
    return directory
