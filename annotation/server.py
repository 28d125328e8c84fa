"""A local Label Studio: its own virtualenv, started on 127.0.0.1, stopped by its recorded PID.

Secrets (admin password, API token, Django secret key) are generated once into a 0600 file in
the data dir; they are passed to Label Studio through its environment and never printed.
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

import psutil
import requests

from photogenic.annotation import objectstore
from photogenic.pipeline.core.config.review import ReviewConfig

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STATE_FILE = "photogenic-server.json"
SECRETS_FILE = "photogenic-secrets.json"
LOG_FILE = "photogenic-server.log"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"


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
    return Path(config.data_dir) if config.data_dir else REPO_ROOT / ".cache" / "label-studio"


def venv_dir(config: ReviewConfig) -> Path:
    return Path(config.venv) if config.venv else REPO_ROOT / ".venv-ls"


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


# --- start / stop / status -------------------------------------------------------------------


def start(config: ReviewConfig, echo=print) -> Connection:
    """Start the local server (or find it running) and wait until it answers on its port."""
    ddir = data_dir(config).resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{config.port}"
    with _file_lock(ddir / ".start.lock"):
        state = _read_state(ddir)
        if _our_process(state):
            if state.get("port") != config.port:
                raise ServerError(f"Label Studio for {ddir} already runs on port {state.get('port')}; "
                                  "stop it first (`photogenic review server stop`)")
            _wait_healthy(None, url, ddir, config.start_timeout_s)  # may still be starting
            return local_connection(config)
        exe = ensure_installed(config, echo=echo)
        if _port_in_use(config.port):
            raise ServerError(f"port {config.port} on {HOST} is already in use by another program; "
                              "set [review] port or pass --port")
        sec = _secrets(ddir, config)
        logf = open(ddir / LOG_FILE, "ab")
        cmd = [str(exe), "start", "--no-browser", "--internal-host", HOST, "--port", str(config.port),
               "--data-dir", str(ddir)]
        proc = subprocess.Popen(cmd, env=_server_env(config, ddir, sec), stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(ddir))
        logf.close()
        state = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                 "port": config.port, "url": url, "data_dir": str(ddir)}
        (ddir / STATE_FILE).write_text(json.dumps(state))
        _wait_healthy(proc, url, ddir, config.start_timeout_s)
    return local_connection(config)


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
    """Stop the server this project started (only its recorded PID). False if none was running."""
    ddir = data_dir(config).resolve()
    proc = _our_process(_read_state(ddir))
    if proc is None:
        (ddir / STATE_FILE).unlink(missing_ok=True)
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    (ddir / STATE_FILE).unlink(missing_ok=True)
    return True


def kill(config: ReviewConfig) -> None:
    """SIGKILL the recorded server (fault drills): no clean shutdown."""
    ddir = data_dir(config).resolve()
    proc = _our_process(_read_state(ddir))
    if proc is not None:
        proc.kill()
        proc.wait(10)


def status(config: ReviewConfig) -> dict:
    ddir = data_dir(config).resolve()
    state = _read_state(ddir)
    proc = _our_process(state)
    url = f"http://{HOST}:{config.port}"
    return {"running": proc is not None, "pid": proc.pid if proc else None,
            "url": state.get("url", url) if state else url, "healthy": healthy(url) if proc else False,
            "data_dir": str(ddir)}


def local_connection(config: ReviewConfig) -> Connection:
    ddir = data_dir(config).resolve()
    sec = _secrets(ddir, config)
    return Connection(url=f"http://{HOST}:{config.port}", token=sec["token"],
                      local_files_root=local_files_root(config),
                      admin_email=sec["email"], admin_password=sec["password"])


def connect(config: ReviewConfig, url: str | None = None, start_local: bool = True) -> Connection:
    """The server to talk to: a user's own (`--url` + LABEL_STUDIO_API_KEY) or the local one."""
    url = url or config.url
    if url:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ServerError(f"--url {url} needs an API token in the environment variable {TOKEN_ENV}")
        root = Path(config.local_files_root).resolve() if config.local_files_root else None
        return Connection(url=url.rstrip("/"), token=token, local_files_root=root)
    if start_local:
        return start(config, echo=lambda msg: print(msg, file=sys.stderr))
    state = _read_state(data_dir(config).resolve())
    if not _our_process(state):
        raise ServerError("the local Label Studio is not running; start it with "
                          "`photogenic review server start`")
    return local_connection(config)
