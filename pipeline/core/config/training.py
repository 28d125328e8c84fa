"""Config sections `[export]`, `[train]`, `[eval]`."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from photogenic.pipeline.core.config.base import Section


# The export formats there are: each name is a module pipeline/export/writers/NAME.py whose
# `Writer` writes that format. A new format is one such module plus its name here.
EXPORT_FORMATS = ("webdataset", "imagefolder", "img2dataset")
# What an export writes when `[export] formats` is not set (img2dataset is asked for by name).
DEFAULT_EXPORT_FORMATS = ("webdataset", "imagefolder")
TRACKERS = ("tensorboard", "wandb")  # [train] report_to: accelerate trackers


class ExportConfig(Section):
    # Share of curated keys held out (by a hash of the key) for validation and early stopping.
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_salt: str = ""  # change to draw a different (still deterministic) split
    shard_size: int = Field(1000, ge=1)  # samples per tar (webdataset and img2dataset)
    # Formats written next to manifest.parquet and lineage.json (which are always written).
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPORT_FORMATS))
    # The older switch for one format, kept working: `imagefolder = false` drops it from formats.
    imagefolder: bool = True
    # Images in the tar formats. "jpg": every sample has one image member, KEY.jpg, so
    # `datasets`, NeMo Curator and img2dataset readers see every row; JPEG bytes are copied as
    # they are, other formats (PNG, WebP, ...) are encoded once as JPEG at `jpeg_quality`
    # with full-resolution colour (4:4:4). "original": each image's own bytes under its own
    # extension (lossless, but `datasets` then reads the rows of one image format only).
    # The imagefolder always keeps the original bytes (the trainer reads that one).
    tar_images: Literal["jpg", "original"] = "jpg"
    jpeg_quality: int = Field(95, ge=1, le=100)
    # A wids (webdataset's indexed reader) shard list per split: wids/SPLIT.json.
    wids_index: bool = True

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str]) -> list[str]:
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ValueError(f"unknown export format(s) {', '.join(map(repr, unknown))}; "
                             f"known formats: {', '.join(EXPORT_FORMATS)}")
        if len(set(formats)) != len(formats):
            raise ValueError(f"a format is listed twice in {formats}")
        return formats

    @model_validator(mode="after")
    def _some_format(self) -> "ExportConfig":
        if not self.selected_formats:
            raise ValueError(f"no export format left (formats = {self.formats}, imagefolder = "
                             f"{str(self.imagefolder).lower()}): name at least one of "
                             f"{', '.join(EXPORT_FORMATS)}")
        return self

    @property
    def selected_formats(self) -> list[str]:
        """The formats to write, in the order listed."""
        return [f for f in self.formats if self.imagefolder or f != "imagefolder"]


class TrainConfig(Section):
    # Emu's recipe: effective batch 64 = micro_batch_size x grad accumulation x devices.
    batch_size: int = Field(64, ge=1)
    micro_batch_size: int = Field(4, ge=1)
    noise_offset: float = 0.1
    max_steps: int = Field(5000, ge=1)
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = Field(100, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_ema: bool = True
    ema_decay: float = 0.9999  # diffusers EMAModel warms the decay up from 0 in early steps
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0)  # empty caption, for CFG
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on cuda
    device: str = "auto"
    seed: int = 0
    # Pixels of the square base bucket; None: the base model's native size (unet x vae).
    resolution: int | None = None
    # Bucket sides are multiples of this; None: 64, or for models under 512 px the smallest
    # size the VAE and UNet accept (16 for the tiny test model).
    bucket_step: int | None = Field(None, ge=8)
    max_aspect: float = Field(2.0, ge=1.0)
    latent_cache: bool = True  # encode latents and captions once, on disk
    # Early stopping on a deterministic validation loss (fixed timesteps and noise).
    validate_every: int = Field(100, ge=1)
    patience: int = Field(5, ge=1)
    min_delta: float = 0.0
    validation_timesteps: int = Field(10, ge=1)  # evenly spaced over the schedule
    validation_seed: int = 1234
    checkpoint_every: int | None = None  # None: at every validation
    keep_checkpoints: int = Field(2, ge=1)  # older accelerate checkpoints are pruned
    # Bucket sizes as "WxH" (diffusers/SimpleTuner style): "512x512,576x448,448x576" or a list;
    # None: made from resolution, bucket_step and max_aspect. Sides: multiples of the model's
    # downsampling (checked when the model is loaded).
    buckets: list[str] | None = None
    # Memory and speed; they do not change what is learnt.
    gradient_checkpointing: bool = False  # recompute UNet activations in backward: less memory
    offload_ema: bool = False  # keep the EMA weights in CPU memory, on the device only to update
    foreach_ema: bool = False  # torch._foreach EMA updates (faster, more peak memory)
    # Min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is the paper's value); None: plain MSE.
    # The validation loss stays the plain MSE, so early stopping compares like with like.
    snr_gamma: float | None = Field(None, gt=0)
    # Trackers besides metrics.jsonl, through accelerate: "tensorboard", "wandb", both
    # ("tensorboard,wandb" or a list), "none", or "auto" (tensorboard when it is installed).
    report_to: list[str] = Field(default_factory=lambda: ["auto"])
    tracker_project: str = "photogenic-train"  # accelerate init_trackers project name

    @field_validator("buckets", mode="before")
    @classmethod
    def _parse_buckets(cls, value):
        if value is None:
            return None
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
        out = []
        for item in items:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                w, h = item
            else:
                text = str(item).strip().lower()
                parts = text.split("x")
                if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                    raise ValueError(f"bucket {item!r} is not WIDTHxHEIGHT (e.g. 512x512)")
                w, h = (int(p) for p in parts)
            if int(w) < 8 or int(h) < 8 or int(w) % 8 or int(h) % 8:
                raise ValueError(f"bucket {w}x{h}: sides must be multiples of 8, at least 8")
            out.append(f"{int(w)}x{int(h)}")
        if not out:
            raise ValueError("buckets is empty: list at least one WIDTHxHEIGHT, or leave it unset")
        if len(set(out)) != len(out):
            raise ValueError(f"a bucket is listed twice in {','.join(out)}")
        return out

    @field_validator("report_to", mode="before")
    @classmethod
    def _parse_report_to(cls, value):
        items = value.split(",") if isinstance(value, str) else list(value)
        names = [str(v).strip().lower() for v in items if str(v).strip()] or ["none"]
        unknown = [n for n in names if n not in TRACKERS + ("auto", "none", "all")]
        if unknown:
            raise ValueError(f"unknown tracker(s) {unknown}; known: {', '.join(TRACKERS)}, "
                             "auto, all, none")
        if len(names) > 1 and set(names) & {"auto", "none", "all"}:
            raise ValueError(f"report_to {names}: auto, all and none stand alone")
        return names

    @model_validator(mode="after")
    def _ema_options(self) -> "TrainConfig":
        if (self.offload_ema or self.foreach_ema) and not self.use_ema:
            raise ValueError("offload_ema / foreach_ema need use_ema = true")
        return self

    @property
    def bucket_sizes(self) -> list[tuple[int, int]] | None:
        """`buckets` as sorted (width, height) pairs."""
        if self.buckets is None:
            return None
        return sorted(tuple(int(v) for v in b.split("x")) for b in self.buckets)

    def trackers(self, available: dict[str, bool]) -> list[str]:
        """The trackers to start, given which are installed; an asked-for one that is not
        installed is an error (ValueError naming it)."""
        names = self.report_to
        if names == ["none"]:
            return []
        if names == ["auto"]:
            return [n for n in ("tensorboard",) if available.get(n)]
        if names == ["all"]:
            return [n for n in TRACKERS if available.get(n)]
        missing = [n for n in names if not available.get(n)]
        if missing:
            raise ValueError(f"[train] report_to names {missing}, which is not installed "
                             f"(pip install {' '.join(missing)}), or set report_to = \"none\"")
        return names


class EvalConfig(Section):
    """`photogenic eval`: base vs tuned on the same prompts and seeds, then an A/B review."""

    seed: int = 0  # seeds the left/right randomisation of the A/B tasks
    seeds: list[int] = [0, 1]  # image seeds per prompt; both models get the same ones
    steps: int = 30  # denoising steps
    guidance_scale: float = 7.5
    height: int | None = None  # None: the model's native size
    width: int | None = None
    batch_size: int = 4  # prompts per pipeline call
    device: str = "auto"
    max_prompts: int | None = None  # None: every prompt; else N spread over the categories
    clip_model: str | None = None  # None: [filters.clip] model / pretrained
    clip_pretrained: str | None = None
    aesthetic_head: str | None = None  # None: [filters.aesthetic] head (skipped if unset too)
    clip_tie_margin: float = 0.002  # |tuned - base| at or below this is a tie
    aesthetic_tie_margin: float = 0.05
    appeal_raters: int = 5  # the paper's protocol: 5 raters, prompt hidden
    faithfulness_raters: int = 3  # 3 raters, prompt shown, "both"/"neither" count as ties
