"""Fault drill: `review pull` SIGKILLed between its output files, then rerun against a real
Label Studio: the pass completes and equals an uninterrupted pull, no annotation lost or doubled."""
import os
import signal

import duckdb

from tests.conftest import run_cli
from tests.annotation.helpers import make_fake_run, write_config

pytest_plugins = ["tests.annotation.helpers"]


def test_review_pull_killed_mid_write_then_rerun_equals_uninterrupted(tmp_path, ls_server, ls_config):
    run = tmp_path / "run"
    make_fake_run(run, 40, prefix="pd")
    cfg = write_config(tmp_path / "c.toml", ls_config)
    run_cli("review", "push", "--run", run, "--pass", "1", "--config", cfg)
    run_cli("review", "simulate", "--run", run, "--pass", "1", "--config", cfg)
    run_cli("review", "pull", "--run", run, "--pass", "1", "--config", cfg)
    out = run / "review" / "pass1"
    q = "select * from '{}' order by all"
    reference = {name: duckdb.sql(q.format(out / name)).fetchall() for name in ("annotations.parquet", "decisions.parquet")}
    assert reference["annotations.parquet"]
    for name in ("annotations.parquet", "decisions.parquet", "_SUCCESS"):
        (out / name).unlink()
    proc = run_cli("review", "pull", "--run", run, "--pass", "1", "--config", cfg, check=False,
                   env={**os.environ, "PHOTOGENIC_FAILPOINT": "pull.between_files"})
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "_SUCCESS").exists() and not (out / "decisions.parquet").exists()
    run_cli("review", "pull", "--run", run, "--pass", "1", "--config", cfg)
    assert (out / "_SUCCESS").exists()
    for name, rows in reference.items():
        assert duckdb.sql(q.format(out / name)).fetchall() == rows
