"""An S3-compatible server on 127.0.0.1 (moto) with the sample pool in a bucket."""
from __future__ import annotations

import pytest

from tests.s3 import DroppableEndpoint, MotoProcess, s3_env, upload_tree

BUCKET = "photogenic-test"


@pytest.fixture(scope="session")
def moto_server():
    server = MotoProcess().start()
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


@pytest.fixture
def droppable(moto_server):
    """A second endpoint in front of the same server that a drill can drop and restore."""
    endpoint = DroppableEndpoint(moto_server.port).restore()
    yield endpoint
    endpoint.drop()
