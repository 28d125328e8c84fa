"""The funnel with only s3:// URLs, against a real S3-compatible server on 127.0.0.1 (moto):
filter -> select -> export read the pool from the bucket (no local copy) and write the run
there, with the same rows and decisions as the local-disk run; no secret reaches a run file."""
from __future__ import annotations

import io
import json

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.s3 import CREDENTIALS, environ_with, filesystem

pytestmark = pytest.mark.timeout(900)
COMPARED = "* EXCLUDE (shard, source)"  # the only columns that name where the pool lives


def read_remote_parquet(fs, prefix: str):
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(io.BytesIO(fs.cat(p))) for p in sorted(fs.find(prefix))
                             if p.endswith(".parquet")])


def committed_scores(fs, run: str):
    """Score rows of the parts the markers commit (what every reader of the run sees)."""
    import pyarrow as pa

    scores = f"{run}/scores"
    names = [json.loads(fs.cat(m))["part"] for m in sorted(fs.find(f"{scores}/_stats"))]
    return pa.concat_tables([pq.read_table(io.BytesIO(fs.cat(f"{scores}/{n}"))) for n in names]), names


def test_filter_select_export_on_s3_match_the_local_run(s3_run, s3, cheap_run, cheap_config_path):
    run, _ = s3_run
    fs = filesystem(s3)
    bucket_run = run.removeprefix("s3://")
    remote, parts = committed_scores(fs, bucket_run)
    assert len(parts) == 8  # one committed part per pool shard
    local = duckdb.sql(f"select {COMPARED} from '{cheap_run}/scores/*.parquet' order by key").fetchall()
    con = duckdb.connect()
    con.register("remote", remote)
    assert con.sql(f"select {COMPARED} from remote order by key").fetchall() == local
    assert remote.column("source").to_pylist()[0].startswith("s3://photogenic-test/pool/")

    # select and export on the local run with the same settings give the same keys and bytes
    run_cli("select", "--run", cheap_run, "--target", "100", "--config", cheap_config_path, "--force")
    run_cli("export", "--run", cheap_run, "--from", "candidates", "--config", cheap_config_path, "--force")
    remote_candidates = read_remote_parquet(fs, f"{bucket_run}/candidates/part-00000.parquet")
    local_candidates = pq.read_table(cheap_run / "candidates" / "part-00000.parquet")
    assert remote_candidates.column("key").to_pylist() == local_candidates.column("key").to_pylist()
    assert fs.exists(f"{bucket_run}/candidates/_SUCCESS") and fs.exists(f"{bucket_run}/export/_SUCCESS")
    remote_manifest = pq.read_table(io.BytesIO(fs.cat(f"{bucket_run}/export/manifest.parquet")))
    local_manifest = pq.read_table(cheap_run / "export" / "manifest.parquet")
    cols = ["key", "sha256", "split"]
    assert remote_manifest.select(cols).to_pylist() == local_manifest.select(cols).to_pylist()
    # the exported shards hold the pool's bytes, read back from the bucket by `source`
    local_tars = sorted(p.name for p in (cheap_run / "export" / "webdataset").glob("*.tar"))
    remote_tars = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket_run}/export/webdataset"))
    assert remote_tars == local_tars and local_tars
    for name in local_tars:  # same members, same image and caption bytes (the .json names the pool's place)
        remote_members = tar_members(fs.cat(f"{bucket_run}/export/webdataset/{name}"))
        local_members = tar_members((cheap_run / "export" / "webdataset" / name).read_bytes())
        assert remote_members.keys() == local_members.keys()
        assert {k: v for k, v in remote_members.items() if not k.endswith(".json")} == {
            k: v for k, v in local_members.items() if not k.endswith(".json")}


def tar_members(data: bytes) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def test_a_rerun_on_s3_resumes_and_adds_nothing(s3_run, s3, s3_pool, cheap_config_path):
    run, _ = s3_run
    proc = run_cli("filter", "--pool", s3_pool, "--out", run, "--config", cheap_config_path, "--quiet",
                   env=environ_with(s3))
    assert proc.returncode == 0
    fs = filesystem(s3)
    table, parts = committed_scores(fs, run.removeprefix("s3://"))
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 282
    funnel = json.loads(fs.cat(f"{run.removeprefix('s3://')}/scores/_funnel.json"))
    assert funnel["shards_run_this_time"] == 0


def test_no_secret_reaches_run_files_or_logs(s3_run, s3, s3_pool, tmp_path):
    """Credentials from the environment and from `[storage]` never appear in what a run writes
    or prints (the report included)."""
    run, outputs = s3_run
    secret = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    config = tmp_path / "with-secret.toml"
    config.write_text(
        f'[storage.options.s3]\nsecret = "{secret}"\nkey = "{CREDENTIALS["AWS_ACCESS_KEY_ID"]}"\n'
        "[filters.offensive]\nenabled = false\n[filters.ocr]\nenabled = false\n[filters.clip]\nenabled = false\n"
        "[filters.aesthetic]\nenabled = false\n[filters.concepts]\nenabled = false\n")
    env = environ_with({k: v for k, v in s3.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    other = "s3://photogenic-test/runs/secret-config"
    outputs.append(run_cli("filter", "--pool", s3_pool, "--out", other, "--config", config, "--quiet",
                           "--master", "local[2]", env=env))  # the credentials come from [storage] only
    outputs.append(run_cli("report", "--run", run, "--out", str(tmp_path / "report"), env=environ_with(s3)))
    fs = filesystem(s3)
    texts = [fs.cat(p) for p in fs.find("photogenic-test/runs")]
    texts += [p.read_bytes() for p in (tmp_path / "report").rglob("*") if p.is_file()]
    texts += [(o.stdout + o.stderr).encode() for o in outputs]
    for needle in (secret, CREDENTIALS["AWS_ACCESS_KEY_ID"]):
        assert not [t for t in texts if needle.encode() in t]
    job = json.loads(fs.cat("photogenic-test/runs/secret-config/scores/_job.json"))
    assert job["config"]["storage"]["options"]["s3"] == {"secret": "***", "key": "***"}


def test_train_reads_the_export_from_s3_and_writes_the_model_there(s3_run, s3, tmp_path):
    """The trainer on URLs: the export comes from the bucket (into the local cache), the model goes
    back to it, without the latent cache."""
    import tomli_w

    from photogenic.training.tiny import make_tiny_base
    from tests.training.helpers import tiny_config

    run, _ = s3_run
    base = make_tiny_base(tmp_path / "base")
    config = tmp_path / "train.toml"
    config.write_text(tomli_w.dumps({"train": tiny_config(max_steps=2, validate_every=1).model_dump(exclude_none=True)}))
    env = environ_with({**s3, "PHOTOGENIC_CACHE": str(tmp_path / "cache")})
    proc = run_cli("train", "--data", f"{run}/export", "--base-model", base, "--out", f"{run}/model",
                   "--config", config, "--quiet", env=env)
    assert "reached max steps at step 2" in proc.stdout and f"{run}/model" in proc.stdout
    fs = filesystem(s3)
    model = run.removeprefix("s3://") + "/model"
    names = {p.removeprefix(model + "/") for p in fs.find(model)}
    assert {"model_index.json", "_SUCCESS"} <= names
    assert any(n.startswith("unet/") and n.endswith(".safetensors") for n in names)
    # Only the model ships: its records in training_state/, never the training state (latent
    # cache, checkpoints with optimizer state), which stays beside the local work folder.
    assert {n for n in names if n.startswith("training_state/")} <= {
        "training_state/run.json", "training_state/metrics.jsonl", "training_state/best.json",
        "training_state/result.json"}
    assert not [n for n in names if any(w in n for w in ("cache", "checkpoint", "optimizer", ".pkl"))]
    work_state = list((tmp_path / "cache" / "models").glob("*/training_state/model"))
    assert len(work_state) == 1 and list(work_state[0].glob("checkpoints/step-*/optimizer.bin"))
    cached = list((tmp_path / "cache" / "exports").glob("*/imagefolder/train/metadata.jsonl"))
    assert len(cached) == 1  # the export's images, copied once into the local cache
