"""Shared pieces of the review tests: one real Label Studio server per test session, fake runs.

Test files load it with `pytest_plugins = ["tests.annotation.helpers"]`, so the session-scoped server
fixture is one fixture definition and starts once however many review files run.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from photogenic.annotation import server
from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.annotation.lsclient import Client
from photogenic.pipeline.core.runio import mark_success, write_parquet_atomic

SAMPLE_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "camera")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_sample_images(folder: Path, size: int = 256) -> list[Path]:
    """A few real photographs from scikit-image, saved as small JPEG files."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_IMAGES:
        path = folder / f"{name}.jpg"
        if not path.exists():
            arr = getattr(data, name)()
            im = Image.fromarray(arr).convert("RGB")
            im.thumbnail((size, size))
            im.save(path, quality=85)
        paths.append(path)
    return paths


def make_fake_run(run: Path, n_keys: int, seed: int = 0, prefix: str = "k") -> list[str]:
    """RUN/candidates with n_keys rows (a few real images reused under different keys)."""
    images = write_sample_images(run.parent / "review-test-images")
    rng = np.random.default_rng(seed)
    keys = [f"{prefix}{i:06d}" for i in range(n_keys)]
    table = pa.table({
        "key": keys,
        "caption": [f"photo {i}" for i in range(n_keys)],
        "source": [str(images[i % len(images)]) for i in range(n_keys)],
        "width": pa.array([256] * n_keys, pa.int32()),
        "height": pa.array([256] * n_keys, pa.int32()),
        "clip_score": rng.normal(0.3, 0.05, n_keys),
        "aesthetic_score": rng.normal(5.0, 1.0, n_keys),
        "concept": [["landscape", "animal", "food", "people"][i % 4] for i in range(n_keys)],
        "likes": rng.integers(0, 1000, n_keys),
        "views": rng.integers(1000, 10000, n_keys),
        "engagement": rng.random(n_keys),
    })
    write_parquet_atomic(table, run / "candidates" / "part-00000.parquet")
    mark_success(run / "candidates")
    return keys


@pytest.fixture(scope="session")
def ls_config() -> ReviewConfig:
    """Config of the session's Label Studio: a fixed free port and a temporary data dir."""
    data = Path(tempfile.mkdtemp(prefix="photogenic-ls-"))
    from tests.s3 import MOTO_ENDPOINT

    # The S3 endpoint: the session's moto server (tests/storage), when a test starts it.
    return ReviewConfig(port=free_port(), data_dir=str(data), s3_endpoint=MOTO_ENDPOINT)


@pytest.fixture(scope="session")
def ls_server(ls_config):
    """One real Label Studio for the whole test session (first start ~25-70 s: migrations)."""
    conn = server.start(ls_config)
    yield conn
    server.stop(ls_config)
    shutil.rmtree(ls_config.data_dir, ignore_errors=True)


@pytest.fixture()
def ls_client(ls_server, ls_config) -> Client:
    return Client(ls_server, max_retries=ls_config.max_retries, backoff_s=ls_config.backoff_s,
                  backoff_max_s=ls_config.backoff_max_s)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(path: Path, ls_config: ReviewConfig, extra: str = "") -> Path:
    """A photogenic TOML config pointing the CLI at the session's server."""
    path.write_text(f'[review]\nport = {ls_config.port}\ndata_dir = "{ls_config.data_dir}"\n{extra}')
    return path


def annotator_store(ls_config: ReviewConfig):
    from photogenic.annotation.users import AnnotatorStore

    return AnnotatorStore(Path(ls_config.data_dir) / "annotators.json")


def submit_grid(client: Client, token: str, task_id: int, keeps: list[bool], lead_time: float = 8.0) -> dict:
    """One grid annotation through the API: the keep toggles of the slots kept are ticked."""
    result = [{"from_name": f"keep_{slot}", "to_name": f"image_{slot}", "type": "choices",
               "value": {"choices": ["keep"]}} for slot, keep in enumerate(keeps) if keep]
    return client.as_user(token).post(f"/api/tasks/{task_id}/annotations/",
                                      json={"result": result, "lead_time": lead_time})


def submit(client: Client, token: str, task_id: int, keep: bool, ratings: dict | None = None,
           lead_time: float = 2.0) -> dict:
    """One annotation through the API as the user owning `token`."""
    result = [{"from_name": "decision", "to_name": "image", "type": "choices",
               "value": {"choices": ["keep" if keep else "drop"]}}]
    for name, value in (ratings or {}).items():
        result.append({"from_name": name, "to_name": "image", "type": "rating", "value": {"rating": value}})
    return client.as_user(token).post(f"/api/tasks/{task_id}/annotations/",
                                      json={"result": result, "lead_time": lead_time})
