"""Fault drills for push and pull against a real Label Studio: the server SIGKILLed in the middle
of a push (the push waits, resumes, and every key has exactly one task), the push itself
SIGKILLed and rerun, and a server that is not there (clear error, nonzero exit, nothing written)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from photogenic.annotation import server
from photogenic.annotation.lsclient import Client
from photogenic.annotation.projects import find_project
from photogenic.annotation.tasksets import server_keys as project_keys, task_keys
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import free_port, make_fake_run, write_config

# The session's one Label Studio server (fixtures ls_config, ls_server, ls_client) is shared by
# every review test file through this plugin, so it starts once per test session.
pytest_plugins = ["tests.annotation.helpers"]

pytestmark = pytest.mark.slow
from tests.conftest import REPO  # noqa: E402


def _push_proc(run: Path, cfg: Path, extra_env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "photogenic.pipeline.cli", "review", "push", "--run", str(run),
                             "--pass", "1", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _task_count(url: str, token: str, run: Path) -> int:
    """Tasks in the run's pass-1 project so far (0 while it does not exist or does not answer)."""
    try:
        client = Client(server.Connection(url=url, token=token, local_files_root=None), max_retries=0,
                        timeout_s=5)
        project = find_project(client, run, "pass1")
        return client.project(project["id"])["task_number"] if project else 0
    except Exception:
        return 0


def _wait_for_tasks(proc, url, token, run, at_least: int, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = _task_count(url, token, run)
        if n >= at_least:
            return n
        if proc.poll() is not None:
            raise AssertionError(f"push ended before the drill: {proc.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError("push made no progress")


def _assert_exactly_once(ls_server, run: Path, keys: list[str]) -> None:
    client = Client(ls_server)
    project = find_project(client, run, "pass1")
    tasks = client.tasks(project["id"], fields="task_only")
    counts = Counter(k for t in tasks for k in task_keys(t["data"]))  # pass 1: grids of 16
    assert sorted(counts) == sorted(keys)
    assert max(counts.values()) == 1
    assert len(project_keys(client, project["id"])) == len(keys)


def test_review_push_resumes_after_server_killed_mid_push(tmp_path, ls_server, ls_config):
    run = tmp_path / "run"
    keys = make_fake_run(run, 3000, prefix="f")
    cfg = write_config(tmp_path / "c.toml", ls_config, "import_batch_size = 8\nbackoff_s = 1.0\n")
    proc = _push_proc(run, cfg)
    try:
        n = _wait_for_tasks(proc, ls_server.url, ls_server.token, run, at_least=1)
        assert n < len(keys) / 16, "push finished before the server could be killed"
        server.kill(ls_config)  # SIGKILL: no clean shutdown, an import may be cut mid-request
        time.sleep(3)
        server.start(ls_config)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "retrying" in out
    _assert_exactly_once(ls_server, run, keys)


def test_review_push_killed_and_rerun_completes_without_duplicates(tmp_path, ls_server, ls_config):
    run = tmp_path / "run"
    keys = make_fake_run(run, 2000, prefix="g")
    cfg = write_config(tmp_path / "c.toml", ls_config, "import_batch_size = 8\n")
    proc = _push_proc(run, cfg)
    try:
        _wait_for_tasks(proc, ls_server.url, ls_server.token, run, at_least=1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _task_count(ls_server.url, ls_server.token, run) < len(keys) / 16
    rerun = _push_proc(run, cfg)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out
    _assert_exactly_once(ls_server, run, keys)


def test_review_unreachable_server_gives_clear_error_and_writes_nothing(tmp_path, ls_config):
    run = tmp_path / "run"
    make_fake_run(run, 5)
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "c.toml", ls_config)
    env = {**os.environ, "LABEL_STUDIO_API_KEY": "not-a-real-token-0123456789"}
    for command in ("push", "pull"):
        proc = subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", "review", command, "--run", str(run),
                               "--pass", "1", "--url", dead, "--config", str(cfg)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert "not reachable" in proc.stderr and "Traceback" not in proc.stderr
        assert "not-a-real-token" not in proc.stdout + proc.stderr
    assert not (run / "review" / "pass1" / "decisions.parquet").exists()
    assert not (run / "review" / "pass1" / "_SUCCESS").exists()
    env.pop("LABEL_STUDIO_API_KEY")
    proc = subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", "review", "pull", "--run", str(run),
                           "--pass", "1", "--url", dead, "--config", str(cfg)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "LABEL_STUDIO_API_KEY" in proc.stderr


def test_review_server_down_during_pull_leaves_previous_output(tmp_path, ls_server, ls_config):
    """Pull fetches everything before writing: with the server gone it fails and old files stay."""
    run = tmp_path / "run"
    make_fake_run(run, 10, prefix="p")
    cfg = write_config(tmp_path / "c.toml", ls_config, "max_retries = 1\nbackoff_s = 0.2\n")
    ok = subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", "review", "push", "--run", str(run), "--pass", "1",
                         "--config", str(cfg)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    first = subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", "review", "pull", "--run", str(run), "--pass",
                            "1", "--config", str(cfg)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    decisions = run / "review" / "pass1" / "decisions.parquet"
    before = decisions.read_bytes()
    server.stop(ls_config)
    try:
        env = {**os.environ, "LABEL_STUDIO_API_KEY": ls_server.token}
        proc = subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", "review", "pull", "--run", str(run),
                               "--pass", "1", "--url", ls_server.url, "--config", str(cfg)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.start(ls_config)
    assert proc.returncode != 0 and "not reachable" in proc.stderr
    assert decisions.read_bytes() == before and (run / "review" / "pass1" / "_SUCCESS").exists()
    assert requests.get(ls_server.url + "/health", timeout=10).status_code == 200
