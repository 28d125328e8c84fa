"""The local Label Studio: installed into its own virtualenv, bound to 127.0.0.1, found again
when already running, annotators added through the invite link, the token kept out of output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from photogenic.annotation import server
from photogenic.annotation.users import AnnotatorStore
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import make_fake_run, write_config

# The session's one Label Studio server (fixtures ls_config, ls_server, ls_client) is shared by
# every review test file through this plugin, so it starts once per test session.
pytest_plugins = ["tests.annotation.helpers"]

pytestmark = pytest.mark.slow
from tests.conftest import REPO  # noqa: E402


def _cli(*args: str, env: dict | None = None, verbose: bool = False) -> subprocess.CompletedProcess:
    top = ["-v"] if verbose else []
    return subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", *top, "review", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def test_review_server_own_venv_localhost_only_and_start_is_idempotent(ls_server, ls_config):
    venv = server.venv_dir(ls_config)
    assert (venv / "bin" / "label-studio").exists() and venv != Path(sys.prefix)
    assert not (Path(sys.prefix) / "bin" / "label-studio").exists()  # not in the project's .venv
    st = server.status(ls_config)
    assert st["running"] and st["healthy"]
    proc = psutil.Process(st["pid"])
    listening = [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    args = ["--port", str(ls_config.port), "--data-dir", ls_config.data_dir]
    again = _cli("server", "start", *args)
    assert again.returncode == 0, again.stderr
    assert server.status(ls_config)["pid"] == st["pid"]  # found running, not started twice
    status = _cli("server", "status", *args)
    assert status.returncode == 0 and f"pid {st['pid']}" in status.stdout
    for out in (again.stdout + again.stderr, status.stdout + status.stderr):
        assert ls_server.token not in out and ls_server.admin_password not in out
    secrets = Path(ls_config.data_dir) / server.SECRETS_FILE
    assert secrets.stat().st_mode & 0o077 == 0


def test_review_server_refuses_a_port_taken_by_another_program(tmp_path):
    import socket

    from photogenic.pipeline.core.config.review import ReviewConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        config = ReviewConfig(port=port, data_dir=str(tmp_path / "ls"))
        with pytest.raises(server.ServerError, match="already in use"):
            server.start(config)


def test_review_annotators_join_through_invite_and_get_their_own_token(ls_client, ls_config, tmp_path):
    store = AnnotatorStore(tmp_path / "annotators.json")
    first = store.ensure(ls_client, "invited-annotator@photogenic.local")
    again = store.ensure(ls_client, "invited-annotator@photogenic.local")
    assert first["id"] == again["id"] and first["token"] != ls_client.conn.token
    who = requests.get(ls_client.url + "/api/current-user/whoami",
                       headers={"Authorization": f"Token {first['token']}"}, timeout=30).json()
    assert who["email"] == "invited-annotator@photogenic.local"
    assert (tmp_path / "annotators.json").stat().st_mode & 0o077 == 0
    members = {u["email"] for u in ls_client.users()}
    assert "invited-annotator@photogenic.local" in members
    invite = _cli("invite", "--config", str(write_config(tmp_path / "c.toml", ls_config)))
    assert invite.returncode == 0 and "/user/signup/?token=" in invite.stdout


def test_review_token_never_in_logs_outputs_or_run_files(ls_server, ls_config, tmp_path):
    run = tmp_path / "run"
    make_fake_run(run, 20, prefix="t")
    cfg = write_config(tmp_path / "c.toml", ls_config)
    outputs = [_cli("push", "--run", str(run), "--pass", "1", "--config", str(cfg)),
               _cli("simulate", "--run", str(run), "--pass", "1", "--config", str(cfg), "--annotators", "2"),
               _cli("pull", "--run", str(run), "--pass", "1", "--config", str(cfg)),
               _cli("status", "--run", str(run), "--config", str(cfg)),
               _cli("status", "--run", str(run), "--config", str(cfg), verbose=True)]
    for proc in outputs:
        assert proc.returncode == 0, proc.stderr
        assert ls_server.token not in proc.stdout + proc.stderr
    for path in run.rglob("*"):
        if path.is_file():
            assert ls_server.token.encode() not in path.read_bytes(), path
    log = (Path(ls_config.data_dir) / server.LOG_FILE).read_text(errors="replace")
    assert ls_server.token not in log
