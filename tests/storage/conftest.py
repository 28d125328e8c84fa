"""An S3-compatible server on 127.0.0.1 (moto) with the sample pool in a bucket."""
from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.s3 import MOTO_PORT, DroppableEndpoint, MotoProcess, environ_with, s3_env, upload_tree

BUCKET = "photogenic-test"


@pytest.fixture(scope="session")
def moto_server():
    server = MotoProcess(MOTO_PORT).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(moto_server):
    """Client environment for the server (standard AWS variables only)."""
    return s3_env(moto_server.endpoint)


@pytest.fixture(scope="session")
def s3_pool(s3, sample_pool) -> str:
    url = f"s3://{BUCKET}/pool"
    upload_tree(sample_pool, url, s3)
    return url


@pytest.fixture(scope="session")
def s3_run(s3, s3_pool, cheap_config_path):
    """filter + select (target 100) + export of the sample pool, all on the bucket; once per
    session (test_s3_run.py checks it against the local run, test_s3_review.py reviews it)."""
    env = environ_with(s3)
    run = f"s3://{BUCKET}/runs/cheap"
    outputs = [run_cli("filter", "--pool", s3_pool, "--out", run, "--config", cheap_config_path,
                       "--master", "local[2]", "--quiet", env=env)]
    outputs.append(run_cli("select", "--run", run, "--target", "100", "--config", cheap_config_path, env=env))
    outputs.append(run_cli("export", "--run", run, "--from", "candidates", "--config", cheap_config_path, env=env))
    return run, outputs


@pytest.fixture
def droppable(moto_server):
    """A second endpoint in front of the same server that a drill can drop and restore."""
    endpoint = DroppableEndpoint(moto_server.port).restore()
    yield endpoint
    endpoint.drop()
