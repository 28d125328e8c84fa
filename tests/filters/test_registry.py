"""The filter registry: what it builds for the built-ins (literally today's), and plugins."""
from __future__ import annotations

import importlib.metadata
import sys
import uuid

import pyarrow as pa
import pytest

from photogenic.filters import registry
from photogenic.filters.base import BaseFilter, FilterConfig
from photogenic.pipeline.core.config import Config, ConfigError, defaults_toml, parse_config
from photogenic.pipeline.core.schema import REJECT_REASONS, SCORE_COLUMNS, SCORE_SCHEMA, score_schema
from photogenic.pipeline.filtering.cascade import build_filters
from tests.filters.plugin_source import write_plugin

F32, I32, I64, STR = pa.float32(), pa.int32(), pa.int64(), pa.string()
# The score table as it was written before the registry existed (pipeline/core/schema.py).
SCORE_TABLE = [
    ("key", STR), ("caption", STR), ("passed", pa.bool_()), ("reject_reason", STR), ("reject_detail", STR),
    ("width", I32), ("height", I32), ("aspect", F32), ("format", STR), ("bytes", I64), ("sha256", STR),
    ("phash", I64), ("edge_width", F32), ("edge_width_best", F32), ("edge_coverage", F32), ("noise", F32),
    ("jpeg_quality", F32), ("clipped_highlights", F32), ("clipped_shadows", F32), ("sharpness", F32),
    ("brightness", F32), ("contrast", F32), ("nsfw_score", F32), ("offensive_term", STR), ("ocr_words", I32),
    ("ocr_text", STR), ("clip_score", F32), ("aesthetic_score", F32), ("concept", STR), ("concept_score", F32),
    ("likes", I64), ("views", I64), ("source", STR), ("shard", STR), ("meta", STR),
]
FILTER_DEFAULTS = {
    "caption": {"enabled": True, "min_chars": 1, "max_chars": 2000, "min_words": 1, "min_printable_ratio": 0.9},
    "geometry": {"enabled": True, "min_side": 256, "max_aspect": 3.0, "max_pixels": 100_000_000,
                 "max_bytes": 50_000_000},
    "technical": {"enabled": True, "max_edge_width": 2.5, "min_edge_coverage": 0.02, "min_jpeg_quality": 20.0,
                  "max_clipped_highlights": None, "max_clipped_shadows": None, "measure_size": 512,
                  "min_sharpness": None, "min_brightness": 0.0, "max_brightness": 255.0, "min_contrast": 0.0},
    "offensive": {"enabled": True, "max_nsfw": 0.5, "terms_file": None, "detector_size": 320, "batch_size": 16},
    "ocr": {"enabled": True, "max_words": 5, "engine": "rapidocr", "det_size": 640, "rec_size": 1024,
            "min_text_score": 0.5, "batch_size": 8},
    "clip": {"enabled": True, "model": "tiny-random", "pretrained": None, "min_score": None,
             "min_score_fraction": None, "batch_size": 32, "device": "auto"},
    "aesthetic": {"enabled": True, "head": None, "min_score": None},
    "concepts": {"enabled": True, "taxonomy": None, "zero_shot": "auto", "min_zero_shot_prob": 0.3},
}
HISTOGRAMS = {
    "short side (px)": ("least(width, height)", [("min_side", "filters.geometry.min_side")]),
    "aspect": ("aspect", [("max_aspect", "filters.geometry.max_aspect")]),
    "edge width (px)": ("edge_width", [("max_edge_width", "filters.technical.max_edge_width")]),
    "edge coverage": ("edge_coverage", [("min_edge_coverage", "filters.technical.min_edge_coverage")]),
    "jpeg quality": ("jpeg_quality", [("min_jpeg_quality", "filters.technical.min_jpeg_quality")]),
    "clipped highlights": ("clipped_highlights", [("max", "filters.technical.max_clipped_highlights")]),
    "clipped shadows": ("clipped_shadows", [("max", "filters.technical.max_clipped_shadows")]),
    "sharpness": ("sharpness", [("min_sharpness", "filters.technical.min_sharpness")]),
    "brightness": ("brightness", [("min_brightness", "filters.technical.min_brightness"),
                                  ("max_brightness", "filters.technical.max_brightness")]),
    "contrast": ("contrast", [("min_contrast", "filters.technical.min_contrast")]),
    "nsfw_score": ("nsfw_score", [("max_nsfw", "filters.offensive.max_nsfw")]),
    "ocr_words": ("ocr_words", [("max_words", "filters.ocr.max_words")]),
    "clip_score": ("clip_score", [("min_score", "filters.clip.min_score")]),
    "aesthetic_score": ("aesthetic_score", [("min_score", "filters.aesthetic.min_score")]),
    "concept_score": ("concept_score", []),
}


@pytest.fixture
def fresh_registry(monkeypatch):
    """Resolved plugins and entry points forgotten before and after (torn down before monkeypatch)."""
    registry.clear_cache()
    yield monkeypatch
    registry.clear_cache()


@pytest.fixture
def plugin(tmp_path, fresh_registry):
    """A plugin module written outside the project, importable under a name of its own."""
    module = f"photogenic_test_plugin_{uuid.uuid4().hex[:8]}"
    fresh_registry.syspath_prepend(str(write_plugin(tmp_path / "plugins", module)))
    yield module
    sys.modules.pop(module, None)


def with_plugin(spec: str, filters: dict | None = None) -> Config:
    return parse_config({"job": {"plugins": [spec]}, "filters": filters or {}})


# -- the built-ins: what was written by hand before, now built ----------------------------------


def test_builtin_registry_is_in_cascade_declaration_order():
    names = [cls.name for cls in registry.builtin_registry()]
    assert names == ["caption", "geometry", "technical", "offensive", "ocr", "clip", "aesthetic", "concepts", "phash"]


def test_score_schema_and_reject_reasons_are_todays():
    assert [(f.name, f.type) for f in SCORE_SCHEMA] == SCORE_TABLE
    assert SCORE_COLUMNS == tuple(name for name, _ in SCORE_TABLE)
    assert REJECT_REASONS == ("unreadable", "caption", "geometry", "technical", "offensive", "ocr", "clip",
                              "aesthetic")


def test_filters_config_defaults_and_histograms_are_todays():
    assert Config().filters.model_dump() == FILTER_DEFAULTS
    assert list(Config().filters.model_dump()) == list(FILTER_DEFAULTS)  # the order of defaults_toml
    assert registry.builtin_registry().histograms() == HISTOGRAMS
    assert list(registry.builtin_registry().histograms()) == list(HISTOGRAMS)


def test_builtin_config_keeps_its_constraints_and_error_messages():
    with pytest.raises(ConfigError, match="unknown key 'filters.geometry.min_sid'"):
        parse_config({"filters": {"geometry": {"min_sid": 1}}})
    with pytest.raises(ConfigError, match=r"filters\.technical\.max_edge_width: Input should be greater than 0"):
        parse_config({"filters": {"technical": {"max_edge_width": 0}}})
    with pytest.raises(ConfigError, match=r"filters\.ocr\.engine"):
        parse_config({"filters": {"ocr": {"engine": "tesseract"}}})


def test_base_filter_gives_the_protocol_defaults():
    class Plain(BaseFilter):
        name = "plain"

    f = Plain()
    assert f.rejects is True and f.meaningless is False and f.embedder is None
    assert f.bind_embedder(object()) is None
    assert Plain.Config is FilterConfig and Plain.histograms == ()


# -- plugins -------------------------------------------------------------------------------------


def test_plugin_gets_a_config_table_columns_reason_and_histogram(plugin):
    config = with_plugin(f"{plugin}:WordFilter", {"wordy": {"words": ["cat"], "max_len": 50}})
    assert config.filters.wordy.words == ["cat"] and config.filters.wordy.enabled
    reg = config.registry
    assert reg.plugins == (f"{plugin}:WordFilter",)
    assert reg.reject_reasons() == REJECT_REASONS + ("plugin_words",)
    schema = score_schema(reg)
    assert schema.field("plugin_caption_len").type == pa.int32()
    assert schema.names[-5:] == ["likes", "views", "source", "shard", "meta"]  # plugin columns before the tail
    assert reg.histograms()["caption length (plugin)"] == ("plugin_caption_len", [("max_len", "filters.wordy.max_len")])
    built, _ = build_filters(config)
    wordy = next(f for f in built if f.name == "wordy")
    assert (wordy.words, wordy.max_len) == (["cat"], 50)
    assert "wordy = " not in defaults_toml() and "[filters.wordy]" not in defaults_toml()  # not installed


def test_plugin_table_defaults_when_absent_and_enabled_false_disables_it(plugin):
    assert with_plugin(f"{plugin}:WordFilter").filters.wordy.max_len == 200
    built, skipped = build_filters(with_plugin(f"{plugin}:WordFilter", {"wordy": {"enabled": False}}))
    assert "wordy" not in {f.name for f in built} and skipped["wordy"] == "disabled in config"


def test_plugin_config_is_validated_by_its_own_model(plugin):
    spec = f"{plugin}:WordFilter"
    with pytest.raises(ConfigError, match="unknown key 'filters.wordy.wrds'"):
        with_plugin(spec, {"wordy": {"wrds": ["x"]}})
    with pytest.raises(ConfigError, match=r"filters\.wordy\.max_len: Input should be greater than or equal to 1"):
        with_plugin(spec, {"wordy": {"max_len": 0}})


def test_plugin_without_a_config_model_gets_its_table_as_keyword_arguments(plugin):
    config = with_plugin(f"{plugin}:NoConfigFilter", {"bare": {"scale": 2.5}})
    built, _ = build_filters(config)
    assert next(f for f in built if f.name == "bare").scale == 2.5
    with pytest.raises(ConfigError, match=r"filters\.bare: .*NoConfigFilter does not take these settings"):
        with_plugin(f"{plugin}:NoConfigFilter", {"bare": {"scael": 2.5}})


def test_a_plain_pydantic_config_model_is_made_strict_and_switchable(plugin):
    spec = f"{plugin}:PlainModelFilter"
    assert with_plugin(spec, {"plainmodel": {"level": 3}}).filters.plainmodel.level == 3
    with pytest.raises(ConfigError, match="unknown key 'filters.plainmodel.levle'"):
        with_plugin(spec, {"plainmodel": {"levle": 3}})
    _, skipped = build_filters(with_plugin(spec, {"plainmodel": {"enabled": False}}))
    assert skipped["plainmodel"] == "disabled in config"


def test_a_table_for_no_known_filter_is_an_error_that_says_how_plugins_are_named():
    with pytest.raises(ConfigError, match=r"unknown key 'filters.wordy' \(no such filter: a plugin's table "
                                          r"needs the plugin in \[job\] plugins"):
        parse_config({"filters": {"wordy": {"words": ["x"]}}})


@pytest.mark.parametrize("spec, message", [
    ("no_colon_here", r"expected 'module:Class'"),
    ("photogenic_no_such_module_xyz:Filter", r"cannot import module 'photogenic_no_such_module_xyz': "
                                             r"ModuleNotFoundError.*importable here and on every Spark worker"),
    ("{plugin}:Missing", r"has no 'Missing'"),
    ("{plugin}:NotAFilter", r"NotAFilter is not a subclass of photogenic.filters.base.BaseFilter"),
    ("{plugin}:TakesCaptionReason", r"reject reason 'caption' is already taken by filter 'caption'"),
    ("{plugin}:TakesClipColumn", r"column 'clip_score' is already taken by filter 'clip'"),
    ("{plugin}:TakesKeyColumn", r"filter 'thief' declares column 'key', which the score table has of its own"),
    ("{plugin}:TakesBuiltinName", r"name 'geometry' is already taken by filter 'geometry'"),
])
def test_a_bad_plugin_is_a_clear_config_error(plugin, spec, message):
    with pytest.raises(ConfigError, match=r"invalid config <dict>:\n  job.plugins: .*" + message):
        with_plugin(spec.format(plugin=plugin))


def test_a_malformed_plugins_value_is_reported_by_the_model():
    with pytest.raises(ConfigError, match=r"job\.plugins"):
        parse_config({"job": {"plugins": "mod:Class"}})


def test_the_fingerprint_of_the_filter_job_covers_plugins(plugin):
    from photogenic.pipeline.filtering.job import job_fingerprint

    plain = job_fingerprint(Config(), False)
    assert job_fingerprint(parse_config({}), False) == plain  # no plugins: old runs still resume
    wordy = job_fingerprint(with_plugin(f"{plugin}:WordFilter"), False)
    assert wordy != plain
    assert job_fingerprint(with_plugin(f"{plugin}:WordFilter", {"wordy": {"max_len": 9}}), False) != wordy


def test_entry_points_are_discovered_and_configured_like_builtins(plugin, fresh_registry):
    real = importlib.metadata.entry_points

    def entry_points(**select):
        if select.get("group") == registry.ENTRY_POINT_GROUP:
            return importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(
                name="wordy", value=f"{plugin}:WordFilter", group=registry.ENTRY_POINT_GROUP)])
        return real(**select)

    fresh_registry.setattr(importlib.metadata, "entry_points", entry_points)
    registry.clear_cache()
    assert registry.entry_point_specs() == (f"{plugin}:WordFilter",)
    config = parse_config({"filters": {"wordy": {"words": ["dog"]}}})  # no [job] plugins needed
    assert config.filters.wordy.words == ["dog"]
    assert "plugin_words" in config.registry.reject_reasons()
    assert "[filters.wordy]" in defaults_toml()  # installed plugins show up in the defaults
    # Named in [job] plugins as well: registered once.
    both = parse_config({"job": {"plugins": [f"{plugin}:WordFilter"]}})
    assert [c.name for c in both.registry.configurable].count("wordy") == 1


def test_a_broken_entry_point_names_its_group(fresh_registry):
    def entry_points(**select):
        return importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(
            name="broken", value="photogenic_no_such_module_xyz:F", group=registry.ENTRY_POINT_GROUP)])

    fresh_registry.setattr(importlib.metadata, "entry_points", entry_points)
    with pytest.raises(ConfigError, match=r"entry point group 'photogenic.filters'.*cannot import module"):
        parse_config({})
