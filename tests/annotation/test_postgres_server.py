"""The local Label Studio on PostgreSQL (`review server start --db postgres`): a real PostgreSQL
from Debian's package and a real Label Studio on it, through the CLI; push, simulate and pull a
pass; status names the database; stop ends both processes. And `server migrate-db --to postgres`
moves a SQLite server with a project, its tasks and an annotator to PostgreSQL.

Each test has its own data dir under a folder the `postgres` user can enter (as root, PostgreSQL
runs as that user; /tmp/pytest-of-root is private to root), not the session's shared server.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import requests

from photogenic.annotation import postgres as pg
from photogenic.annotation import server
from photogenic.annotation.lsclient import Client
from photogenic.annotation.users import AnnotatorStore
from photogenic.pipeline.core.config.review import ReviewConfig
pytest.register_assert_rewrite("tests.annotation.helpers")  # before the import: no rewrite warning
from tests.annotation.helpers import free_port, make_fake_run, write_config
from tests.conftest import REPO  # noqa: E402

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "photogenic.pipeline.cli", "review", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture()
def pg_config():
    """A free port and a fresh data dir the postgres user can reach; everything stopped after."""
    base = Path(tempfile.mkdtemp(prefix="photogenic-pg-"))
    os.chmod(base, 0o755)
    config = ReviewConfig(port=free_port(), data_dir=str(base / "ls"))
    yield config
    server.stop(config)
    shutil.rmtree(base, ignore_errors=True)


def _args(config: ReviewConfig) -> list[str]:
    return ["--port", str(config.port), "--data-dir", config.data_dir]


def _sql(config: ReviewConfig, query: str) -> str:
    """A query in Label Studio's PostgreSQL database, as its role, with its password."""
    ddir = Path(config.data_dir)
    password = json.loads((ddir / server.SECRETS_FILE).read_text())["postgres_password"]
    bindir = pg.bin_dir(install=False)
    return pg.psql(bindir, pg.running(bindir, ddir / "postgres"), password, query)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_review_server_on_postgres_push_pull_status_and_stop(pg_config, tmp_path):
    ddir = Path(pg_config.data_dir)
    started = _ok(_cli("server", "start", "--db", "postgres", *_args(pg_config)))
    assert "database: PostgreSQL at 127.0.0.1:" in started.stdout
    st = server.status(pg_config)  # a default config (db not set) finds the running server's db
    assert st["running"] and st["healthy"] and st["db"] == "postgres"
    info = st["database"]
    assert info["running"] and info["host"] == "127.0.0.1" and info["data_dir"] == str(ddir / "postgres")
    assert not server.sqlite_path(ddir).exists()
    pg_proc = psutil.Process(info["pid"])
    assert pg_proc.username() == ("postgres" if os.geteuid() == 0 else psutil.Process().username())
    listening = {c.laddr for c in pg_proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert {(a.ip, a.port) for a in listening} == {("127.0.0.1", info["port"])}
    with pytest.raises(subprocess.CalledProcessError):  # password auth: a wrong one is refused
        subprocess.run([str(pg.bin_dir(install=False) / "psql"), "-h", "127.0.0.1", "-p", str(info["port"]),
                        "-U", pg.ROLE, "-d", pg.DATABASE, "-c", "SELECT 1"], check=True, capture_output=True,
                       env={**os.environ, "PGPASSWORD": "wrong"}, timeout=30)

    run = tmp_path / "run"
    keys = make_fake_run(run, 12, prefix="pg")
    cfg = str(write_config(tmp_path / "c.toml", pg_config))  # no db: the running server is used
    outputs = [_ok(_cli("push", "--run", str(run), "--pass", "1", "--config", cfg)),
               _ok(_cli("simulate", "--run", str(run), "--pass", "1", "--config", cfg, "--annotators", "2")),
               _ok(_cli("pull", "--run", str(run), "--pass", "1", "--config", cfg))]
    decisions = pq.read_table(run / "review" / "pass1" / "decisions.parquet").column("key").to_pylist()
    assert sorted(decisions) == sorted(keys)
    # Label Studio really keeps them in PostgreSQL: its tables, the tasks and annotations in them.
    assert int(_sql(pg_config, "SELECT count(*) FROM pg_tables WHERE tablename = 'task'")) == 1
    assert int(_sql(pg_config, "SELECT count(*) FROM task")) >= 1
    assert int(_sql(pg_config, "SELECT count(*) FROM task_completion")) >= 1
    assert not server.sqlite_path(ddir).exists()

    again = _ok(_cli("server", "start", *_args(pg_config)))  # idempotent: found running
    assert server.status(pg_config)["pid"] == st["pid"]
    other = _cli("server", "start", "--db", "sqlite", *_args(pg_config))
    assert other.returncode != 0 and "stop it first" in other.stderr
    status = _ok(_cli("server", "status", *_args(pg_config)))
    assert f"database: PostgreSQL at 127.0.0.1:{info['port']}" in status.stdout.replace("\n", " ")
    assert str(ddir / "postgres") in status.stdout.replace("\n", "")

    secrets = json.loads((ddir / server.SECRETS_FILE).read_text())
    assert (ddir / server.SECRETS_FILE).stat().st_mode & 0o077 == 0 and secrets["db"] == "postgres"
    logs = (ddir / server.LOG_FILE).read_text(errors="replace") + pg.log_tail(ddir / "postgres", 10**7)
    for out in [started, again, other, status, *outputs]:
        assert secrets["postgres_password"] not in out.stdout + out.stderr
    assert secrets["postgres_password"] not in logs

    _ok(_cli("server", "stop", *_args(pg_config)))
    assert _gone(st["pid"]) and _gone(info["pid"])
    assert not server._port_in_use(pg_config.port) and not server._port_in_use(info["port"])
    stopped = _cli("server", "status", *_args(pg_config))
    assert stopped.returncode == 3 and "PostgreSQL, not running" in stopped.stdout


def _storages(client: Client, projects: list[tuple]) -> dict:
    """Each project's local-files import storages: (id, path)."""
    return {pid: sorted((s["id"], s["path"]) for s in client.get("/api/storages/localfiles", params={"project": pid}))
            for pid, _, _ in projects}


def test_review_server_migrate_db_moves_a_sqlite_server_to_postgres(pg_config, tmp_path):
    ddir = Path(pg_config.data_dir)
    conn = server.start(pg_config)  # SQLite, the default
    assert server.status(pg_config)["db"] == "sqlite" and server.sqlite_path(ddir).exists()
    run = tmp_path / "run"
    make_fake_run(run, 15, prefix="mv")
    cfg = str(write_config(tmp_path / "c.toml", pg_config))
    _ok(_cli("push", "--run", str(run), "--pass", "1", "--config", cfg))
    client = Client(conn)
    store = AnnotatorStore(tmp_path / "annotators.json")
    annotator = store.ensure(client, "moved-annotator@photogenic.local")
    before = [(p["id"], p["title"], p["task_number"]) for p in client.projects()]
    storages = _storages(client, before)
    assert storages and all(storages.values())  # push gave the project a local-files storage
    task_ids = sorted(t["id"] for t in client.tasks(before[0][0], fields="task_only"))
    assert before and len(task_ids) >= 1

    moved = _ok(_cli("server", "migrate-db", "--to", "postgres", *_args(pg_config)))
    assert "from sqlite to postgres" in moved.stdout
    st = server.status(pg_config)
    assert st["running"] and st["db"] == "postgres" and st["database"]["running"]
    assert [(p["id"], p["title"], p["task_number"]) for p in client.projects()] == before
    assert sorted(t["id"] for t in client.tasks(before[0][0], fields="task_only")) == task_ids
    assert _storages(client, before) == storages
    assert int(_sql(pg_config, "SELECT count(*) FROM task")) == len(task_ids)
    # Users and their API tokens moved (the annotator's own token works), and new rows get new
    # ids (the sequences were reset after the load).
    who = requests.get(f"{conn.url}/api/current-user/whoami", timeout=30,
                       headers={"Authorization": f"Token {annotator['token']}"}).json()
    assert who["email"] == "moved-annotator@photogenic.local" and who["id"] == annotator["id"]
    assert store.ensure(client, "new-annotator@photogenic.local")["id"] > annotator["id"]
    _ok(_cli("push", "--run", str(run), "--pass", "1", "--config", cfg))  # the same project again
    assert [(p["id"], p["task_number"]) for p in client.projects()] == [(b[0], b[2]) for b in before]
    again = _cli("server", "migrate-db", "--to", "postgres", *_args(pg_config))
    assert again.returncode != 0 and "already uses postgres" in again.stderr
