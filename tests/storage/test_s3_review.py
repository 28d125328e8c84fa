"""Review pass 1 of a run on S3, against the real Label Studio and the moto server on 127.0.0.1:
push materialises the JPEGs under the run's media prefix on the bucket and gives the project an S3
import storage; Label Studio serves a task's image by redirecting to a presigned URL on the
store; simulate + pull write one decision per pushed key to the bucket, the same decisions as a
local-disk run of the same pass and seed; no credential reaches an object of the run."""
from __future__ import annotations

import base64
import io
import json

import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import write_config  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.s3 import CREDENTIALS, MOTO_ENDPOINT, environ_with, filesystem  # noqa: E402

pytest_plugins = ["tests.annotation.helpers"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
LIMIT = 12
SEED = 3


def _review(run: str, config, env) -> list:
    outputs = []
    for cmd in (["push", "--limit", str(LIMIT)],
                ["simulate", "--annotators", "2", "--seed", str(SEED), "--keep-share", "0.3"],
                ["pull"]):
        outputs.append(run_cli("review", cmd[0], "--run", run, "--pass", "1", "--config", config,
                               *cmd[1:], env=env))
    return outputs


@pytest.fixture(scope="module")
def reviewed(s3_run, s3, ls_server, ls_config, tmp_path_factory):
    """Pass 1 pushed (LIMIT images), simulated and pulled on the S3 run and on a local copy of
    its candidates."""
    run, _ = s3_run
    base = tmp_path_factory.mktemp("s3-review")
    # Every task to both simulated annotators: Label Studio picks overlap tasks at random otherwise.
    config = write_config(base / "review.toml", ls_config,
                          "[review.pass1]\noverlap_fraction = 1.0\noverlap_annotators = 2\n")
    env = environ_with(s3)
    fs = filesystem(s3)
    bucket_run = run.removeprefix("s3://")
    local = base / "local-run"
    fs.get(f"{bucket_run}/candidates/", str(local / "candidates"), recursive=True)
    assert (local / "candidates" / "_SUCCESS").exists()
    remote_out = _review(run, config, env)
    local_out = _review(str(local), config, env)
    return {"run": run, "bucket_run": bucket_run, "local": local, "fs": fs, "env": env,
            "outputs": remote_out + local_out}


def test_push_serves_images_from_the_bucket_through_presigned_urls(reviewed, ls_server):
    fs, bucket_run = reviewed["fs"], reviewed["bucket_run"]
    push = json.loads(fs.cat(f"{bucket_run}/review/pass1/push.json"))
    assert push["n_in_project"] == LIMIT and push["n_unreadable"] == 0
    media = sorted(fs.find(f"{bucket_run}/review/media"))
    assert len(media) == LIMIT and all(p.endswith(".jpg") for p in media)
    headers = {"Authorization": f"Token {ls_server.token}"}
    storages = requests.get(f"{ls_server.url}/api/storages/s3/", params={"project": push["project_id"]},
                            headers=headers, timeout=30).json()
    assert [(s["bucket"], s["prefix"], s["presign"]) for s in storages] == [
        ("photogenic-test", "runs/cheap/review/media", True)]
    assert not any("aws_secret_access_key" in s for s in storages)  # Label Studio never shows it

    tasks = requests.get(f"{ls_server.url}/api/tasks/", params={"project": push["project_id"],
                         "fields": "all", "page_size": 100}, headers=headers, timeout=30).json()["tasks"]
    assert len(tasks) == 1 and len(tasks[0]["data"]["images"]) == LIMIT  # pass 1: one grid of 12
    task = tasks[0]
    raw = requests.get(f"{ls_server.url}/api/tasks/{task['id']}/", params={"resolve_uri": "false"},
                       headers=headers, timeout=30).json()["data"]["images"][0]["url"]
    assert raw.startswith("s3://photogenic-test/runs/cheap/review/media/") and raw.endswith(".jpg")
    # What the browser is given for the image (nested in the grid's list): the task's resolve
    # endpoint, never the bare s3:// URL.
    shown = task["data"]["images"][0]["url"]
    assert not shown.startswith("s3://")
    fileuri = base64.urlsafe_b64encode(raw.encode()).decode()
    resolve = (f"{ls_server.url}{shown}" if shown.startswith("/tasks/")
               else f"{ls_server.url}/tasks/{task['id']}/resolve/?fileuri={fileuri}")
    redirect = requests.get(resolve, headers=headers, allow_redirects=False, timeout=30)
    assert redirect.status_code in (302, 303), redirect.text[:300]
    presigned = redirect.headers["Location"]
    assert presigned.startswith(MOTO_ENDPOINT + "/") and "Signature" in presigned
    image = requests.get(presigned, timeout=30)  # no Label Studio token: the URL is the grant
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(image.content)) as im:
        assert im.format == "JPEG" and max(im.size) > 0
    assert image.content == fs.cat(raw.removeprefix("s3://"))


def test_pull_writes_one_decision_per_pushed_key_like_the_local_run(reviewed):
    fs, bucket_run, local = reviewed["fs"], reviewed["bucket_run"], reviewed["local"]
    out = f"{bucket_run}/review/pass1"
    tasks = pq.read_table(io.BytesIO(fs.cat(f"{out}/tasks.parquet")))
    decisions = pq.read_table(io.BytesIO(fs.cat(f"{out}/decisions.parquet")))
    keys = decisions["key"].to_pylist()
    assert sorted(keys) == sorted(tasks["key"].to_pylist()) and len(set(keys)) == LIMIT
    assert fs.exists(f"{out}/_SUCCESS") and fs.exists(f"{out}/simulation.json")
    assert fs.exists(f"{out}/annotations.parquet") and fs.exists(f"{bucket_run}/review/run_id")
    assert all(n == 2 for n in decisions["n_annotations"].to_pylist())
    local_decisions = pq.read_table(local / "review" / "pass1" / "decisions.parquet")
    assert decisions.to_pylist() == local_decisions.to_pylist()
    assert 0 < sum(decisions["keep"].to_pylist()) < LIMIT
    # the ledger on the bucket is trusted on a re-push: nothing new imported
    proc = run_cli("review", "push", "--run", reviewed["run"], "--pass", "1", "--limit", str(LIMIT),
                   "--config", reviewed["local"].parent / "review.toml", env=reviewed["env"])
    assert "0 new image(s) imported" in proc.stdout
    reviewed["outputs"].append(proc)
    status = run_cli("review", "status", "--run", reviewed["run"], "--json",
                     "--config", reviewed["local"].parent / "review.toml", env=reviewed["env"])
    first = json.loads(status.stdout)[0]
    assert first["source"] == "live" and first["decisions"] == {"keys": LIMIT, "kept": sum(decisions["keep"].to_pylist())}
    assert first["simulated"] is True
    reviewed["outputs"].append(status)


def test_no_credential_reaches_the_run_or_the_output(reviewed):
    fs, bucket_run = reviewed["fs"], reviewed["bucket_run"]
    objects = [fs.cat(p) for p in fs.find(bucket_run)]
    objects += [p.read_bytes() for p in reviewed["local"].rglob("*") if p.is_file()]
    objects += [(o.stdout + o.stderr).encode() for o in reviewed["outputs"]]
    for needle in (CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"]):
        assert not [o for o in objects if needle.encode() in o]
