"""A private PostgreSQL server for the local Label Studio, from Debian's `postgresql` package.

Its data dir is DATA_DIR/postgres. It listens on 127.0.0.1 only (no Unix socket), on a free port
picked at each start, with password (scram-sha-256) authentication for every connection. The one
role, `labelstudio`, owns the cluster and the database `labelstudio`; its password is generated
once into the server's 0600 secrets file and passed through environments and files, never on a
command line. PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user,
which must own the data dir and be able to reach it.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
ROLE = "labelstudio"
DATABASE = "labelstudio"
SYSTEM_USER = "postgres"  # who runs the server when we are root (Debian's package creates it)
LOG_NAME = "postgres.log"  # inside the PostgreSQL data dir


class PostgresError(RuntimeError):
    pass


@dataclass(frozen=True)
class Running:
    pid: int
    port: int
    data_dir: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


# --- binaries --------------------------------------------------------------------------------


def bin_dir(install: bool = True, echo=print) -> Path:
    """Where initdb, pg_ctl and psql are; as root, installs Debian's package when missing."""
    found = find_bin_dir()
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        echo("PostgreSQL is not installed: apt-get install postgresql (once)")
        _apt_install()
        found = find_bin_dir()
    if found is None:
        raise PostgresError("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
                            "install it with `sudo apt-get install postgresql` (Debian/Ubuntu), "
                            "or use the default `--db sqlite`")
    return found


def find_bin_dir() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(newest).parent


def _apt_install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "postgresql"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        _check(subprocess.run(cmd, env=env, capture_output=True, text=True), "apt-get install postgresql")


def _check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-2000:]
        raise PostgresError(f"{what} failed ({proc.returncode}):\n{tail}")
    return proc


# --- running as the postgres user ------------------------------------------------------------


def _as_owner(cmd: list[str]) -> list[str]:
    """`cmd` as the user that owns and runs the cluster: `postgres` when we are root."""
    return ["runuser", "-u", SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _owner_run(args: list[str], what: str | None = None) -> subprocess.CompletedProcess:
    """Run as the cluster's owner, from / (the caller's folder may be private to root)."""
    proc = subprocess.run(_as_owner(args), capture_output=True, text=True, cwd="/", stdin=subprocess.DEVNULL)
    return _check(proc, what) if what else proc


def _owner_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(f"running as root, PostgreSQL needs the system user '{SYSTEM_USER}' "
                            "(Debian's postgresql package creates it)") from None
    return entry.pw_uid, entry.pw_gid


def _give(path: Path, mode: int) -> None:
    uid, gid = _owner_ids()
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def check_reachable(folder: Path) -> None:
    """As root: the postgres user must be able to enter every folder down to `folder`."""
    if os.geteuid() != 0:
        return
    _owner_ids()
    for part in [*reversed(folder.parents), folder]:
        if _owner_run(["test", "-x", str(part)]).returncode != 0:
            raise PostgresError(
                f"the '{SYSTEM_USER}' user (PostgreSQL refuses to run as root) cannot enter {part}, so it "
                f"cannot reach its data dir {folder}; give that folder o+x (chmod o+x {part}) or use a "
                "Label Studio data dir (--data-dir) outside private folders such as /tmp/pytest-of-root")


# --- the cluster -----------------------------------------------------------------------------


def initialised(pgdata: Path) -> bool:
    return (pgdata / "PG_VERSION").exists()


def init(bindir: Path, pgdata: Path, password: str) -> None:
    """initdb once: role `labelstudio` (password), scram-sha-256 everywhere, 127.0.0.1 only."""
    if initialised(pgdata):
        return
    check_reachable(pgdata.parent)
    pgdata.mkdir(parents=True, exist_ok=True)
    _give(pgdata, 0o700)
    pwfile = pgdata.parent / ".postgres-init-password"
    pwfile.unlink(missing_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    try:
        _give(pwfile, 0o600)
        _owner_run([str(bindir / "initdb"), "-D", str(pgdata), "-U", ROLE, f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"], "initdb")
    finally:
        pwfile.unlink(missing_ok=True)
    with open(pgdata / "postgresql.conf", "a") as fh:
        fh.write("\n# photogenic: TCP on 127.0.0.1 only (the port is given at start), no Unix socket\n"
                 "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")


def running(bindir: Path, pgdata: Path) -> Running | None:
    """The server of this data dir, if one runs (pg_ctl status; pid and port from postmaster.pid)."""
    if not initialised(pgdata):
        return None
    if _owner_run([str(bindir / "pg_ctl"), "status", "-D", str(pgdata)]).returncode != 0:
        return None
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return Running(pid=int(lines[0]), port=int(lines[3]), data_dir=pgdata)
    except (OSError, IndexError, ValueError):
        return None


def start(bindir: Path, pgdata: Path, password: str, echo=print) -> Running:
    """Start the server (or find it running) and make sure Label Studio's database exists."""
    found = running(bindir, pgdata)
    if found is None:
        init(bindir, pgdata, password)
        check_reachable(pgdata)
        port = _free_port()
        echo(f"starting PostgreSQL on {HOST}:{port} (data dir {pgdata})")
        _owner_run([str(bindir / "pg_ctl"), "start", "-D", str(pgdata), "-w", "-t", "120",
                    "-l", str(pgdata / LOG_NAME), "-o", f"-p {port}"], f"pg_ctl start (log: {pgdata / LOG_NAME})")
        found = running(bindir, pgdata)
        if found is None:
            raise PostgresError(f"PostgreSQL did not stay up; log:\n{log_tail(pgdata)}")
    _ensure_database(bindir, found, password)
    return found


def stop(bindir: Path, pgdata: Path, timeout: int = 60) -> bool:
    """`pg_ctl stop -m fast` on this data dir. False if it was not running."""
    if running(bindir, pgdata) is None:
        return False
    _owner_run([str(bindir / "pg_ctl"), "stop", "-D", str(pgdata), "-m", "fast", "-w", "-t", str(timeout)],
               "pg_ctl stop")
    return True


def log_tail(pgdata: Path, n: int = 3000) -> str:
    try:
        return (pgdata / LOG_NAME).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- SQL -------------------------------------------------------------------------------------


def psql(bindir: Path, server: Running, password: str, sql: str, database: str = DATABASE) -> str:
    """One SQL command as `labelstudio` over TCP (password in PGPASSWORD); unaligned rows."""
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    proc = subprocess.run([str(bindir / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", HOST,
                           "-p", str(server.port), "-U", ROLE, "-d", database, "-c", sql],
                          env=env, capture_output=True, text=True)
    return _check(proc, f"psql {sql[:60]!r}").stdout.strip()


def _ensure_database(bindir: Path, server: Running, password: str) -> None:
    if psql(bindir, server, password, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
            database="postgres") != "1":
        psql(bindir, server, password, f"CREATE DATABASE {DATABASE} OWNER {ROLE}", database="postgres")


def table_count(bindir: Path, server: Running, password: str) -> int:
    """Tables in Label Studio's database (0: fresh, never migrated)."""
    return int(psql(bindir, server, password, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))


def label_studio_env(server: Running, password: str) -> dict[str, str]:
    """What Label Studio's settings read to use this server."""
    return {"DJANGO_DB": "default", "POSTGRE_NAME": DATABASE, "POSTGRE_USER": ROLE,
            "POSTGRE_PASSWORD": password, "POSTGRE_HOST": HOST, "POSTGRE_PORT": str(server.port)}
