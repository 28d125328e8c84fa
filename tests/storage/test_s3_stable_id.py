"""`stable_id` on a store: created once by an exclusive create (S3's If-None-Match: *), so
concurrent first callers all get the first writer's id."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from photogenic.pipeline.core.runio import stable_id
from tests.s3 import filesystem
from tests.storage.conftest import BUCKET


def test_stable_id_on_a_store_is_created_once_under_concurrent_first_calls(s3, s3_pool, monkeypatch):
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{BUCKET}/ids/run-a/review/run_id"
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: stable_id(url), range(8)))
    assert len(set(ids)) == 1 and len(ids[0]) == 32
    assert filesystem(s3).cat(url.removeprefix("s3://")).decode().strip() == ids[0]
    assert stable_id(url) == ids[0]
    # the server honours the exclusive create that stable_id relies on
    with pytest.raises(FileExistsError):
        with filesystem(s3).open(url.removeprefix("s3://"), "xb") as fh:
            fh.write(b"other\n")
