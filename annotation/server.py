"""A local Label Studio: its own virtualenv, started on 127.0.0.1, stopped by its recorded PID.

Secrets (admin password, API token, Django secret key, PostgreSQL password) are generated once
into a 0600 file in the data dir; they are passed to Label Studio through its environment and
never printed.

Its database is SQLite (DATA_DIR/label_studio.sqlite3, the default) or a private PostgreSQL
server (DATA_DIR/postgres, see `postgres.py`) that `start` starts first and `stop` stops last.
Which one: `--db` / `[review] db` when given; else the one the data dir last ran on (recorded in
its secrets file), else SQLite. Commands that only need a server (`connect`: push, pull, ...)
use the running one whatever its database; `start` refuses a running server on another one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import requests

from photogenic.annotation import objectstore
from photogenic.annotation import postgres as pg
from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.pipeline.core.storage import cache_root, data_root

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where a source checkout kept Label Studio before the user's cache / data dirs; still used when
# present (and set explicitly by the Makefile through the variables below).
LEGACY_VENV = REPO_ROOT / ".venv-ls"
LEGACY_DATA_DIR = REPO_ROOT / ".cache" / "label-studio"
VENV_ENV = "PHOTOGENIC_LS_VENV"
DATA_DIR_ENV = "PHOTOGENIC_LS_DATA_DIR"
HOST = "127.0.0.1"
STATE_FILE = "photogenic-server.json"
SECRETS_FILE = "photogenic-secrets.json"
LOG_FILE = "photogenic-server.log"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
SQLITE_FILE = "label_studio.sqlite3"  # Label Studio's own name for it, in its data dir
POSTGRES_DIR = "postgres"


class ServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Connection:
    """Where a Label Studio is and how to authenticate; repr never shows the token."""

    url: str
    token: str
    local_files_root: Path | None
    admin_email: str | None = None
    admin_password: str | None = None

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r})"


def data_dir(config: ReviewConfig) -> Path:
    """`[review] data_dir` / `--data-dir`, else PHOTOGENIC_LS_DATA_DIR, else a source checkout's
    `.cache/label-studio` when it exists (where it was before), else the user's data dir
    (`data_root()/label-studio`, ~/.local/share/photogenic/label-studio on Linux)."""
    return _location(config.data_dir, DATA_DIR_ENV, LEGACY_DATA_DIR, lambda: data_root() / "label-studio")


def venv_dir(config: ReviewConfig) -> Path:
    """Label Studio's own virtualenv: `[review] venv`, else PHOTOGENIC_LS_VENV, else a source
    checkout's `.venv-ls` when it exists (where it was before), else the user's cache dir
    (`cache_root()/label-studio-venv`, ~/.cache/photogenic/label-studio-venv on Linux)."""
    return _location(config.venv, VENV_ENV, LEGACY_VENV, lambda: cache_root() / "label-studio-venv")


def _location(configured: str | None, env: str, legacy: Path, default: Callable[[], Path]) -> Path:
    """The configured path, else the environment's, else the checkout's legacy folder when present, else default."""
    if configured:
        return Path(configured)
    if os.environ.get(env):
        return Path(os.environ[env])
    return legacy if legacy.is_dir() else default()


def postgres_dir(ddir: Path) -> Path:
    return ddir / POSTGRES_DIR


def sqlite_path(ddir: Path) -> Path:
    return ddir / SQLITE_FILE


# --- install ---------------------------------------------------------------------------------


def ensure_installed(config: ReviewConfig, echo=print) -> Path:
    """Label Studio's executable, installing its virtualenv first when missing (idempotent)."""
    venv = venv_dir(config)
    exe = venv / "bin" / "label-studio"
    stamp = venv / ".photogenic-installed"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == config.label_studio_version:
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(venv.parent / f".{venv.name}.lock"):
        if exe.exists() and stamp.exists() and stamp.read_text().strip() == config.label_studio_version:
            return exe
        echo(f"installing label-studio=={config.label_studio_version} into {venv} (once, ~1-2 min)")
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", f"label-studio=={config.label_studio_version}"])
        if not exe.exists():
            raise ServerError(f"label-studio installed but {exe} is missing")
        stamp.write_text(config.label_studio_version + "\n")
    return exe


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise ServerError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- secrets and state -----------------------------------------------------------------------


def _secrets(ddir: Path, config: ReviewConfig) -> dict:
    path = ddir / SECRETS_FILE
    if path.exists():
        return json.loads(path.read_text())
    ddir.mkdir(parents=True, exist_ok=True)
    values = {
        "email": config.admin_email,
        "password": secrets.token_urlsafe(18),
        "token": secrets.token_hex(20),  # legacy tokens are 40 hex characters
        "secret_key": secrets.token_urlsafe(48),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def _update_secrets(ddir: Path, config: ReviewConfig, **changes) -> dict:
    """Add or change keys of the secrets file (rewritten atomically, still 0600)."""
    values = _secrets(ddir, config)
    if all(values.get(k) == v for k, v in changes.items()):
        return values
    values.update(changes)
    tmp = ddir / f".{SECRETS_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.replace(tmp, ddir / SECRETS_FILE)
    return values


def postgres_password(ddir: Path, config: ReviewConfig) -> str:
    sec = _secrets(ddir, config)
    if "postgres_password" not in sec:
        sec = _update_secrets(ddir, config, postgres_password=secrets.token_urlsafe(24))
    return sec["postgres_password"]


def requested_db(config: ReviewConfig) -> str | None:
    """The database asked for: `--db` or `[review] db` when set; None when not asked."""
    return config.db if "db" in config.model_fields_set else None


def remembered_db(ddir: Path) -> str | None:
    """The database this data dir last ran on (None: never started)."""
    try:
        return json.loads((ddir / SECRETS_FILE).read_text()).get("db")
    except (OSError, ValueError):
        return None


def db_to_start(config: ReviewConfig, ddir: Path) -> str:
    return requested_db(config) or remembered_db(ddir) or "sqlite"


def _read_state(ddir: Path) -> dict | None:
    try:
        return json.loads((ddir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _our_process(state: dict | None) -> psutil.Process | None:
    """The recorded server process, if it is still alive and still Label Studio."""
    if not state:
        return None
    try:
        proc = psutil.Process(state["pid"])
        if proc.create_time() != state["create_time"] or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, KeyError):
        return None


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def local_files_root(config: ReviewConfig) -> Path:
    if config.local_files_root:
        return Path(config.local_files_root).resolve()
    return (data_dir(config) / "media-root").resolve()


def _server_env(config: ReviewConfig, ddir: Path, sec: dict) -> dict:
    root = local_files_root(config)
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    env.update({
        "LABEL_STUDIO_USERNAME": sec["email"],
        "LABEL_STUDIO_PASSWORD": sec["password"],
        "LABEL_STUDIO_USER_TOKEN": sec["token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        # No error reports to Label Studio's Sentry: offline, and task data must stay local.
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "SECRET_KEY": sec["secret_key"],
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(root),
        "LABEL_STUDIO_BASE_DATA_DIR": str(ddir),
        "PYTHONUNBUFFERED": "1",
    })
    endpoint = objectstore.s3_endpoint(config)
    if endpoint:
        # Label Studio's operator-trusted S3 endpoint: a storage may not name a private endpoint
        # itself (SSRF protection), so runs on a store at 127.0.0.1 or in a LAN are reached
        # through this one.
        env["LABEL_STUDIO_S3_ENDPOINT"] = endpoint
    return env


# --- the database ----------------------------------------------------------------------------


@contextlib.contextmanager
def _pg_errors():
    try:
        yield
    except pg.PostgresError as err:
        raise ServerError(str(err)) from None


def label_studio_env(config: ReviewConfig, ddir: Path) -> dict:
    """The environment Label Studio runs in, less its database's part (start_database)."""
    return _server_env(config, ddir, _secrets(ddir, config))


def start_database(config: ReviewConfig, ddir: Path, db: str, echo) -> tuple[dict, dict]:
    """Start the database when it is a server; (Label Studio's env for it, what the state records)."""
    if db == "sqlite":
        return {"DJANGO_DB": "sqlite", "DATABASE_NAME": str(sqlite_path(ddir))}, {}
    password = postgres_password(ddir, config)
    with _pg_errors():
        bindir = pg.bin_dir(echo=echo)
        found = pg.start(bindir, postgres_dir(ddir), password, echo=echo)
    return pg.label_studio_env(found, password), {"postgres": _pg_record(found)}


def _pg_record(found: pg.Running) -> dict:
    return {"pid": found.pid, "host": pg.HOST, "port": found.port, "data_dir": str(found.data_dir)}


def _say_database(ddir: Path, db: str, recorded: dict, echo) -> None:
    """Which database is in use, and the other one's data when this data dir also has it."""
    if db == "postgres":
        info = recorded["postgres"]
        echo(f"database: PostgreSQL at {info['host']}:{info['port']} (data dir {info['data_dir']})")
        if sqlite_path(ddir).exists():
            echo(f"  not used: the SQLite database {sqlite_path(ddir)} in this data dir "
                 "(`photogenic review server migrate-db` moves data between the two)")
    else:
        echo(f"database: SQLite {sqlite_path(ddir)}")
        if pg.initialised(postgres_dir(ddir)):
            echo(f"  not used: the PostgreSQL data in {postgres_dir(ddir)} (start with --db postgres to use it)")


def _stop_postgres(ddir: Path) -> bool:
    """`pg_ctl stop` on this data dir's PostgreSQL, if it runs."""
    pgdata = postgres_dir(ddir)
    if not pg.initialised(pgdata):
        return False
    with _pg_errors():
        return pg.stop(pg.bin_dir(install=False), pgdata)


# --- start / stop / status -------------------------------------------------------------------


def start(config: ReviewConfig, echo=print, follow_running: bool = False) -> Connection:
    """Start the local server (or find it running) and wait until it answers on its port.

    follow_running: a running server is used whatever its database (commands that only need a
    server); otherwise one running on another database than asked for is an error."""
    ddir = data_dir(config).resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{config.port}"
    with _file_lock(ddir / ".start.lock"):
        state = _read_state(ddir)
        if _our_process(state):
            _check_running(state, config, ddir, follow_running)
            _wait_healthy(None, url, ddir, config.start_timeout_s)  # may still be starting
            return local_connection(config)
        exe = ensure_installed(config, echo=echo)
        if _port_in_use(config.port):
            raise ServerError(f"port {config.port} on {HOST} is already in use by another program; "
                              "set [review] port or pass --port")
        db = db_to_start(config, ddir)
        sec = _secrets(ddir, config)
        db_env, recorded = start_database(config, ddir, db, echo)
        _say_database(ddir, db, recorded, echo)
        proc = _spawn(exe, config, ddir, {**_server_env(config, ddir, sec), **db_env})
        state = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                 "port": config.port, "url": url, "data_dir": str(ddir), "db": db, **recorded}
        (ddir / STATE_FILE).write_text(json.dumps(state))
        _update_secrets(ddir, config, db=db)
        _wait_healthy(proc, url, ddir, config.start_timeout_s)
    return local_connection(config)


def _check_running(state: dict, config: ReviewConfig, ddir: Path, follow_running: bool) -> None:
    if state.get("port") != config.port:
        raise ServerError(f"Label Studio for {ddir} already runs on port {state.get('port')}; "
                          "stop it first (`photogenic review server stop`)")
    running_db, wanted = state.get("db", "sqlite"), requested_db(config)
    if wanted and wanted != running_db and not follow_running:
        raise ServerError(f"Label Studio for {ddir} already runs on {running_db}, not {wanted}; "
                          "stop it first (`photogenic review server stop`)")


def _spawn(exe: Path, config: ReviewConfig, ddir: Path, env: dict) -> subprocess.Popen:
    logf = open(ddir / LOG_FILE, "ab")
    cmd = [str(exe), "start", "--no-browser", "--internal-host", HOST, "--port", str(config.port),
           "--data-dir", str(ddir)]
    try:
        return subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(ddir))
    finally:
        logf.close()


def _wait_healthy(proc: subprocess.Popen | None, url: str, ddir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"Label Studio exited with {proc.returncode}; log:\n{_log_tail(ddir)}")
        if healthy(url):
            return
        time.sleep(0.5)
    raise ServerError(f"Label Studio did not answer on {url} within {timeout:.0f}s; log:\n{_log_tail(ddir)}")


def _log_tail(ddir: Path, n: int = 3000) -> str:
    try:
        return (ddir / LOG_FILE).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def stop(config: ReviewConfig, timeout: float = 20.0) -> bool:
    """Stop the server this project started (only its recorded PID), then its PostgreSQL
    (`pg_ctl stop` on DATA_DIR/postgres). False if neither was running."""
    ddir = data_dir(config).resolve()
    stopped = _stop_label_studio(ddir, timeout)
    stopped = _stop_postgres(ddir) or stopped
    (ddir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _stop_label_studio(ddir: Path, timeout: float) -> bool:
    proc = _our_process(_read_state(ddir))
    if proc is None:
        return False
    proc.send_signal(signal.SIGTERM)
    if not _ended(proc, timeout):
        proc.kill()
        _ended(proc, 10)
    return True


def _ended(proc: psutil.Process, timeout: float) -> bool:
    """Wait until it exits; a zombie counts (its parent, maybe another process, reaps it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
            proc.wait(0.2)
            return True
        except psutil.TimeoutExpired:
            continue
        except psutil.NoSuchProcess:
            return True
    return False


def kill(config: ReviewConfig) -> None:
    """SIGKILL the recorded server (fault drills): no clean shutdown. Its PostgreSQL keeps
    running; the next start finds it."""
    ddir = data_dir(config).resolve()
    proc = _our_process(_read_state(ddir))
    if proc is not None:
        proc.kill()
        proc.wait(10)


def status(config: ReviewConfig) -> dict:
    """Whether the server runs, and its database: `db` and `database` (see describe_database)."""
    ddir = data_dir(config).resolve()
    state = _read_state(ddir)
    proc = _our_process(state)
    url = f"http://{HOST}:{config.port}"
    db = state.get("db", "sqlite") if proc else db_to_start(config, ddir)
    return {"running": proc is not None, "pid": proc.pid if proc else None,
            "url": state.get("url", url) if state else url, "healthy": healthy(url) if proc else False,
            "data_dir": str(ddir), "db": db, "database": _database_status(ddir, db)}


def _database_status(ddir: Path, db: str) -> dict:
    if db == "sqlite":
        return {"path": str(sqlite_path(ddir))}
    info = {"data_dir": str(postgres_dir(ddir)), "running": False}
    bindir = pg.find_bin_dir()
    found = pg.running(bindir, postgres_dir(ddir)) if bindir else None
    if found:
        info.update(_pg_record(found), running=True)
    return info


def describe_database(st: dict) -> str:
    """status()'s database for people: the SQLite file, or PostgreSQL's address and data dir."""
    info = st["database"]
    if st["db"] == "sqlite":
        return f"SQLite {info['path']}"
    if info["running"]:
        return f"PostgreSQL at {info['host']}:{info['port']} (pid {info['pid']}, data dir {info['data_dir']})"
    return f"PostgreSQL, not running (data dir {info['data_dir']})"


def local_connection(config: ReviewConfig) -> Connection:
    ddir = data_dir(config).resolve()
    sec = _secrets(ddir, config)
    return Connection(url=f"http://{HOST}:{config.port}", token=sec["token"],
                      local_files_root=local_files_root(config),
                      admin_email=sec["email"], admin_password=sec["password"])


def connect(config: ReviewConfig, url: str | None = None, start_local: bool = True) -> Connection:
    """The server to talk to: a user's own (`--url` + LABEL_STUDIO_API_KEY) or the local one
    (the running one whatever its database, else started as `start` would)."""
    url = url or config.url
    if url:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ServerError(f"--url {url} needs an API token in the environment variable {TOKEN_ENV}")
        root = Path(config.local_files_root).resolve() if config.local_files_root else None
        return Connection(url=url.rstrip("/"), token=token, local_files_root=root)
    if start_local:
        return start(config, echo=lambda msg: print(msg, file=sys.stderr), follow_running=True)
    state = _read_state(data_dir(config).resolve())
    if not _our_process(state):
        raise ServerError("the local Label Studio is not running; start it with "
                          "`photogenic review server start`")
    return local_connection(config)
