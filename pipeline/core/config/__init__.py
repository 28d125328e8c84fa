"""One TOML config, validated with pydantic. Unknown keys are errors that name the key."""
from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w
from pydantic import BaseModel, Field, ValidationError, create_model, field_serializer

from photogenic.filters.registry import ENTRY_POINT_GROUP, PluginError, Registry, builtin_registry, resolve
from photogenic.pipeline.core.config.base import Section
from photogenic.pipeline.core.schema import SchemaConflict, score_schema
from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.pipeline.core.config.training import EvalConfig, ExportConfig, TrainConfig

# --- filters ---------------------------------------------------------------------------------
# Each filter class declares its `[filters.NAME]` model (`Config`); the section is built from the
# registry. Plugins are resolved first (`[job] plugins` + entry points, see `parse_config`), then
# validated with a Config model whose filters section includes their tables.


@lru_cache(maxsize=None)
def filters_section_model(registry: Registry) -> type[Section]:
    """The `[filters]` section for the filters of `registry`, one table per configurable filter."""
    fields: dict[str, Any] = {name: (model, Field(default_factory=model))
                              for name, model in registry.sections().items()}
    return create_model("FiltersConfig", __base__=Section, __module__=__name__, **fields)


FiltersConfig = filters_section_model(builtin_registry())


# --- stages ----------------------------------------------------------------------------------


class SparkConfig(Section):
    master: str = "local[*]"
    app_name: str = "photogenic"
    conf: dict[str, str] = Field(default_factory=dict)  # e.g. spark.hadoop.fs.s3a.* (secrets masked in dumps)
    driver_memory: str = "2g"

    @field_serializer("conf", when_used="json")
    def _mask_secrets(self, conf: dict[str, str], info) -> dict[str, str]:
        if info.context and info.context.get("reveal_secrets"):
            return conf
        return {k: MASK if _looks_secret(k) else v for k, v in conf.items()}


class FilterJobConfig(Section):
    # Rows per Arrow batch inside a worker; bounds memory (images are held per batch only).
    batch_rows: int = 64
    # Images per shard when the pool is a folder (tar and parquet files are shards already).
    folder_shard_size: int = 1000
    score_all: bool = False
    order: list[str] | None = None  # explicit cascade order; None: by cost hint
    # Run the filters that can reject in the order of their measured cost per rejected row, per
    # worker (pipeline/filtering/cascade.py). Verdicts (`passed`) are the same in any order; a
    # rejected row's `reject_reason` is its first failing check in the order its batch ran, so it
    # can differ between runs: off by default, where reasons are reproducible.
    # Ignored when `order` pins an order, and under score_all.
    adaptive: bool = False
    # Filter plugins, "module:Class" (BaseFilter subclasses), on top of the installed entry points
    # of group "photogenic.filters". The module must be importable on every Spark worker too.
    plugins: list[str] = Field(default_factory=list)


class SelectConfig(Section):
    target: int = Field(200_000, ge=0)
    seed: int = 0
    engine: Literal["duckdb", "spark"] = "duckdb"
    # Near duplicates: pHash Hamming distance <= near_dup_hamming, found exactly by banding the
    # 64 bits into near_dup_bands bands and probing each band within ceil((h+1)/bands)-1 bits
    # (pipeline/selection/dedup.py). 2 bands suit h <= 3 at 10^7+ rows; h 4-7 wants 4-8 bands.
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
    # A head learnt from review decisions blended into the ranking (pipeline/selection/head.py):
    # "auto" (the latest review pass of this run that learnt one), a head file, or None
    # (engagement alone). The blend is (1 - head_weight) z(engagement) + head_weight z(head).
    head: str | None = None
    head_weight: float = Field(0.5, ge=0.0, le=1.0)
    audit: bool = True  # write candidates/_dropped/ (key, reason, dup_of) for every dropped row
    memory_limit: str = "4GB"  # DuckDB; spills to temp_directory beyond it
    threads: int | None = Field(None, ge=1)  # DuckDB; None: all cores
    temp_directory: str | None = None  # DuckDB spill dir; None: RUN/.select-tmp


SECRET_HINTS = ("secret", "key", "token", "password", "credential", "sas", "signature")
MASK = "***"


class StorageConfig(Section):
    """`[storage.options.PROTOCOL]`: fsspec storage options per protocol, on top of what each
    backend reads from the standard environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...):

        [storage.options.s3]
        endpoint_url = "http://127.0.0.1:9000"
        client_kwargs = {region_name = "us-east-1"}

    Values whose key looks secret are masked in every JSON dump of the config (run files,
    summaries, the report); only the live process holds them."""

    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_serializer("options", when_used="json")
    def _mask_secrets(self, options: dict[str, dict[str, Any]], info) -> dict[str, dict[str, Any]]:
        if info.context and info.context.get("reveal_secrets"):
            return options
        return {proto: {k: MASK if _looks_secret(k) else v for k, v in opts.items()}
                for proto, opts in options.items()}


def _looks_secret(key: str) -> bool:
    key = key.lower()
    return any(hint in key for hint in SECRET_HINTS)


class Config(Section):
    spark: SparkConfig = Field(default_factory=SparkConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    job: FilterJobConfig = Field(default_factory=FilterJobConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    # The filters this config's class knows: built-ins here; `config_model` subclasses add plugins.
    registry: ClassVar[Registry] = builtin_registry()


@lru_cache(maxsize=None)
def config_model(registry: Registry) -> type[Config]:
    """`Config` whose `[filters]` section has the tables of `registry`'s filters (plugins too)."""
    if registry == Config.registry:
        return Config
    section = filters_section_model(registry)
    namespace = {"__module__": __name__, "__annotations__": {"filters": section},
                 "filters": Field(default_factory=section), "registry": registry}
    return type("Config", (Config,), namespace)


class ConfigError(ValueError):
    pass


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = UNKNOWN_FILTER_HINT if len(e["loc"]) == 2 and e["loc"][0] == "filters" else ""
            lines.append(f"  unknown key '{loc}'{hint}")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


UNKNOWN_FILTER_HINT = (" (no such filter: a plugin's table needs the plugin in [job] plugins or installed "
                       f"as a {ENTRY_POINT_GROUP!r} entry point)")


def _plugin_specs(data: dict[str, Any]) -> list[str]:
    # Read before validation, which needs the plugins' tables; a malformed value is left for the
    # model to report with the rest.
    job = data.get("job")
    plugins = job.get("plugins") if isinstance(job, dict) else None
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        return plugins
    return []


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Resolve the filter plugins (`[job] plugins` + entry points), then validate everything."""
    try:
        registry = resolve(_plugin_specs(data))
        score_schema(registry)  # a plugin column that clashes with the score table's own
        model = config_model(registry)
    except (PluginError, SchemaConflict) as err:
        raise ConfigError(f"invalid config {source}:\n  job.plugins: {err}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def with_plugins(config: Config) -> Config:
    """`config` re-validated with its plugins resolved (a plain `Config()` knows built-ins only)."""
    return parse_config(config.model_dump())


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

    walk(config_model(resolve())(), "")  # installed plugins' tables too
    return "\n".join(out).lstrip() + "\n"
