"""Shared fixtures: Spark env, one small sample pool per session, one scored run per session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from photogenic.pipeline.core.spark import spark_env

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
PHOTOGENIC = [sys.executable, "-m", "photogenic.pipeline.cli"]

spark_env()
os.environ.setdefault("PHOTOGENIC_WORKER_THREADS", "1")

# Everything but the model filters: fast, and what the issue-2 tests are about.
CHEAP_CONFIG = """
[filters.offensive]
enabled = false
[filters.ocr]
enabled = false
[filters.clip]
enabled = false
[filters.aesthetic]
enabled = false
[filters.concepts]
enabled = false
"""


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PHOTOGENIC, *map(str, args)], capture_output=True, text=True, cwd=REPO, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"photogenic {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def sample_pool(tmp_path_factory) -> Path:
    """A small sample pool (real photos + every planted defect), built once per session."""
    from photogenic.pipeline.sample.pool import build_sample_pool

    out = tmp_path_factory.mktemp("pool") / "pool"
    build_sample_pool(out, seed=0, n_clean=120, shard_size=40)
    return out


@pytest.fixture(scope="session")
def cheap_config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "cheap.toml"
    path.write_text(CHEAP_CONFIG)
    return path


@pytest.fixture(scope="session")
def spark():
    from photogenic.pipeline.core.spark import get_spark

    session = get_spark(master="local[2]")
    yield session


@pytest.fixture(scope="session")
def scored_run(sample_pool, tmp_path_factory, spark) -> Path:
    """The sample pool through the default filter job (all filters that are available)."""
    from photogenic.pipeline.core.config import Config
    from photogenic.pipeline.filtering.job import run_filter

    run = tmp_path_factory.mktemp("run") / "run"
    run_filter(sample_pool, run, Config(), spark=spark, save_embeddings=True)
    return run


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def cheap_run(sample_pool, cheap_config_path, tmp_path_factory, spark) -> Path:
    """The sample pool through the filter job with the cheap filters only."""
    from photogenic.pipeline.core.config import load_config
    from photogenic.pipeline.filtering.job import run_filter

    run = tmp_path_factory.mktemp("cheap") / "run"
    run_filter(sample_pool, run, load_config(cheap_config_path), spark=spark)
    return run
