"""One TOML config, validated with pydantic. Unknown keys are errors that name the key."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, Field, ValidationError

from photogenic.pipeline.core.config.base import Section
from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.pipeline.core.config.training import EvalConfig, ExportConfig, TrainConfig

# --- filters ---------------------------------------------------------------------------------


class CaptionFilterConfig(Section):
    enabled: bool = True
    min_chars: int = 1
    max_chars: int = 2000
    min_words: int = 1
    # Share of characters that must be letters/digits/spaces/punctuation; catches binary junk.
    min_printable_ratio: float = 0.9


class GeometryFilterConfig(Section):
    enabled: bool = True
    min_side: int = 256
    max_aspect: float = 3.0
    # Anything past this is refused before decoding (pixel bombs).
    max_pixels: int = 100_000_000
    max_bytes: int = 50_000_000


class TechnicalFilterConfig(Section):
    enabled: bool = True
    # Width in pixels (at measure_size) of the crispest edges of the sharpest region, in their
    # weakest orientation: ~1-2 in focus, 3+ blurred, defocused, shaken or upscaled. None: off.
    max_edge_width: float | None = Field(2.5, gt=0)
    # Images with edges in less than this share of windows (flat colour, fog, empty sky) are not
    # judged for focus: there is nothing to be out of focus.
    min_edge_coverage: float = Field(0.02, ge=0, le=1)
    min_jpeg_quality: float | None = Field(20.0, ge=1, le=100)  # estimated from the quantisation tables
    # Shares of pixels with a blown (>= 250) / crushed (<= 5) channel. Off by default: low-key,
    # high-key and night photographs clip on purpose (bench/filters.py measures the false rejects).
    max_clipped_highlights: float | None = Field(None, ge=0, le=1)
    max_clipped_shadows: float | None = Field(None, ge=0, le=1)
    # Long side of the grey image everything is measured on (never upscaled); fixed so scores compare.
    measure_size: int = Field(512, ge=64)
    # Legacy gates: variance of the Laplacian (texture, not focus: off), mean level and spread.
    min_sharpness: float | None = None
    min_brightness: float = 0.0
    max_brightness: float = 255.0
    min_contrast: float = 0.0


class OffensiveFilterConfig(Section):
    enabled: bool = True
    max_nsfw: float = 0.5
    terms_file: str | None = None  # None: the list shipped in filters/data/offensive_terms.txt
    detector_size: int = 320
    batch_size: int = 16


class OcrFilterConfig(Section):
    enabled: bool = True
    max_words: int = 5
    engine: Literal["rapidocr", "paddleocr"] = "rapidocr"
    det_size: int = 640  # long side the text detector sees (a downscaled copy)
    rec_size: int = 1024  # long side of the decode that found text boxes are cropped from for recognition
    min_text_score: float = 0.5  # recognised lines below this confidence are ignored
    batch_size: int = 8  # text lines per recognition batch


class ClipFilterConfig(Section):
    enabled: bool = True
    model: str = "tiny-random"
    pretrained: str | None = None  # open_clip tag or a local checkpoint path
    min_score: float | None = None  # None: scored, not thresholded
    min_score_fraction: float | None = None
    batch_size: int = 32
    device: str = "auto"


class AestheticFilterConfig(Section):
    enabled: bool = True
    head: str | None = None  # path to a LAION-format .pth/.safetensors; None: skipped
    min_score: float | None = None


class ConceptsFilterConfig(Section):
    enabled: bool = True
    taxonomy: str | None = None  # None: filters/data/concepts.toml
    zero_shot: Literal["auto", "on", "off"] = "auto"  # auto: only with real CLIP weights
    min_zero_shot_prob: float = 0.3  # below this (and no caption keyword) the row is tagged `other`


class FiltersConfig(Section):
    caption: CaptionFilterConfig = Field(default_factory=CaptionFilterConfig)
    geometry: GeometryFilterConfig = Field(default_factory=GeometryFilterConfig)
    technical: TechnicalFilterConfig = Field(default_factory=TechnicalFilterConfig)
    offensive: OffensiveFilterConfig = Field(default_factory=OffensiveFilterConfig)
    ocr: OcrFilterConfig = Field(default_factory=OcrFilterConfig)
    clip: ClipFilterConfig = Field(default_factory=ClipFilterConfig)
    aesthetic: AestheticFilterConfig = Field(default_factory=AestheticFilterConfig)
    concepts: ConceptsFilterConfig = Field(default_factory=ConceptsFilterConfig)


# --- stages ----------------------------------------------------------------------------------


class SparkConfig(Section):
    master: str = "local[*]"
    app_name: str = "photogenic"
    conf: dict[str, str] = Field(default_factory=dict)
    driver_memory: str = "2g"


class FilterJobConfig(Section):
    # Rows per Arrow batch inside a worker; bounds memory (images are held per batch only).
    batch_rows: int = 64
    # Images per shard when the pool is a folder (tar and parquet files are shards already).
    folder_shard_size: int = 1000
    score_all: bool = False
    order: list[str] | None = None  # explicit cascade order; None: by cost hint


class SelectConfig(Section):
    target: int = Field(200_000, ge=0)
    seed: int = 0
    engine: Literal["duckdb", "spark"] = "duckdb"
    # Near duplicates: pHash Hamming distance <= near_dup_hamming, found exactly by banding the
    # 64 bits into near_dup_bands bands and probing each band within ceil((h+1)/bands)-1 bits
    # (pipeline/dedup.py). 2 bands suit h <= 3 at 10^7+ rows; h 4-7 wants 4-8 bands.
    near_dup_hamming: int = Field(3, ge=0, le=32)
    near_dup_bands: int = Field(2, ge=1, le=32)
    balance: Literal["quota", "metaclip"] = "quota"
    concept_weights: dict[str, float] = Field(default_factory=dict)  # unlisted: 1.0; 0 drops
    metaclip_t: int | None = Field(None, ge=1)  # None: t chosen so the expected total is target
    engagement: Literal["bayes", "wilson", "likes"] = "bayes"
    bayes_prior_views: float = Field(1000.0, gt=0)  # weight of the pooled like rate, in views
    bayes_prior_rate: float | None = Field(None, ge=0, le=1)  # None: pooled rate of the input
    wilson_z: float = Field(1.96, gt=0)
    min_engagement: float | None = None
    audit: bool = True  # write candidates/_dropped/ (key, reason, dup_of) for every dropped row
    memory_limit: str = "4GB"  # DuckDB; spills to temp_directory beyond it
    threads: int | None = Field(None, ge=1)  # DuckDB; None: all cores
    temp_directory: str | None = None  # DuckDB spill dir; None: RUN/.select-tmp


class Config(Section):
    spark: SparkConfig = Field(default_factory=SparkConfig)
    job: FilterJobConfig = Field(default_factory=FilterJobConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


class ConfigError(ValueError):
    pass


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{loc}'")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {path} is not valid TOML: {err}") from None
    return parse_config(data, str(path))


def _drop_none(obj: Any) -> Any:
    # TOML has no null: unset optional keys are shown as comments instead.
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def dump_config(config: Config) -> str:
    return tomli_w.dumps(_drop_none(config.model_dump(mode="json")))


def defaults_toml() -> str:
    """The full default config, optional keys that default to unset listed as comments."""
    out = []

    def walk(model: BaseModel, prefix: str, array: bool = False) -> None:
        scalars = {}
        nested = []
        tables = []  # lists of sections, e.g. [[review.passes]]
        for name, value in model:
            if isinstance(value, BaseModel):
                nested.append((name, value))
            elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
                tables.append((name, value))
            else:
                scalars[name] = value
        if prefix:
            out.append(f"\n[[{prefix}]]" if array else f"\n[{prefix}]")
        for name, value in scalars.items():
            if value is None:
                out.append(f"# {name} = (unset)")
            elif isinstance(value, dict):
                items = ", ".join(tomli_w.dumps({k: v}).strip() for k, v in value.items())
                out.append(f"{name} = {{{items}}}" if items else f"{name} = {{}}")
            else:
                out.append(tomli_w.dumps({name: value}).rstrip())
        for name, value in nested:
            walk(value, f"{prefix}.{name}" if prefix else name)
        for name, items in tables:
            for item in items:
                walk(item, f"{prefix}.{name}" if prefix else name, array=True)

    walk(Config(), "")
    return "\n".join(out).lstrip() + "\n"
