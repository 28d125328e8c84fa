import tomllib

import pytest

from photogenic.pipeline.core.config import Config, ConfigError, defaults_toml, load_config, parse_config
from tests.conftest import run_cli


def test_defaults_roundtrip_through_toml():
    text = defaults_toml()
    assert "[filters.geometry]" in text and "min_side = 256" in text
    assert parse_config(tomllib.loads(text)) == Config()


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[filters.geometry]\nmin_sid = 100\n")
    with pytest.raises(ConfigError, match="unknown key 'filters.geometry.min_sid'"):
        load_config(path)


def test_bad_value_and_bad_toml_are_clear(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[filters.geometry]\nmin_side = 'big'\n")
    with pytest.raises(ConfigError, match="filters.geometry.min_side"):
        load_config(path)
    path.write_text("[filters\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_thresholds_are_read(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[filters.geometry]\nmin_side = 512\nmax_aspect = 2.0\n[filters.technical]\nenabled = false\n")
    cfg = load_config(path)
    assert cfg.filters.geometry.min_side == 512 and cfg.filters.geometry.max_aspect == 2.0
    assert cfg.filters.technical.enabled is False


def test_cli_prints_defaults_and_rejects_unknown_keys(tmp_path):
    out = run_cli("config", "--print-defaults")
    assert parse_config(tomllib.loads(out.stdout)) == Config()
    bad = tmp_path / "bad.toml"
    bad.write_text("[select]\ntarget = 10\nbogus = 1\n")
    proc = run_cli("config", "--check", bad, check=False)
    assert proc.returncode != 0 and "unknown key 'select.bogus'" in proc.stderr
