"""`photogenic review server migrate-db --to postgres|sqlite`: move a local Label Studio's data.

Label Studio has no migration between databases of its own, so this is Django's: stop the server,
`dumpdata` the current database (with natural foreign keys, so content types and permissions
match up by name; primary keys are kept, so user, project and task ids stay the same), create
the other one's tables with `migrate`, `loaddata` the dump into it, check that a dump of it
holds as many objects of each model, then start on it. Both run
through Label Studio's own settings, in its own virtualenv. Left out of the dump: what
`migrate` creates itself (content types, permissions, Label Studio's async-migration records),
login sessions (everyone logs in again) and django_rq's table-less queue model.

Some of Label Studio's models (the local-files storages among them) are registered only when
its URLs are imported (`manage.py` does it through its system checks), so the commands run after
importing them. While loading, pre_save/post_save receivers do not run for fixture rows (Django passes
`raw=True` for them; Label Studio's receivers do not look at it and would, for example, give
every loaded user a second API token). The old database is kept; the data dir remembers the new
one.
"""
from __future__ import annotations

import glob
import json
from collections import Counter
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from photogenic.annotation import postgres as pg
from photogenic.annotation import server
from photogenic.annotation.server import ServerError
from photogenic.pipeline.core.config.review import ReviewConfig

EXCLUDE = ("contenttypes", "auth.Permission", "sessions", "django_rq", "core.AsyncMigrationStatus")

# Runs in Label Studio's virtualenv with its package folder on PYTHONPATH (as its manage.py
# runs); argv[1:] a management command.
MANAGE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
import django
django.setup()
from django.core.management import call_command
from django.urls import get_resolver

get_resolver().url_patterns  # imports every view, so every model is registered as in the server
from django.db.models import signals

def quiet_for_fixtures(signal):
    send = signal.send
    signal.send = lambda sender, **kw: [] if kw.get("raw") else send(sender, **kw)

quiet_for_fixtures(signals.pre_save)
quiet_for_fixtures(signals.post_save)
call_command(*sys.argv[1:])
"""


@dataclass(frozen=True)
class Moved:
    source: str
    target: str
    n_objects: int
    kept: str  # the old database, left in place


def migrate(config: ReviewConfig, target: str, echo=print) -> Moved:
    """Move the data dir's Label Studio from its current database to `target` and start it there."""
    ddir = server.data_dir(config).resolve()
    source = current_db(config, ddir)
    if source == target:
        raise ServerError(f"the Label Studio in {ddir} already uses {target}")
    _check_source(ddir, source)
    server.ensure_installed(config, echo=echo)
    echo("stopping Label Studio to move its data")
    server.stop(config)
    work = Path(tempfile.mkdtemp(prefix=".photogenic-migrate-", dir=ddir))  # 0700: the dump has tokens
    try:
        n_objects = _move(config, ddir, source, target, work / "dump.json", echo)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop(config)  # the PostgreSQL started for the move
    config = config.model_copy(deep=True)
    config.db = target
    server.start(config, echo=echo)
    kept = str(server.sqlite_path(ddir) if source == "sqlite" else server.postgres_dir(ddir))
    return Moved(source=source, target=target, n_objects=n_objects, kept=kept)


def current_db(config: ReviewConfig, ddir: Path) -> str:
    """What the data dir runs on now: the running server's database, else the last one used."""
    st = server.status(config)
    return st["db"] if st["running"] else (server.remembered_db(ddir) or "sqlite")


def _check_source(ddir: Path, source: str) -> None:
    there = (server.sqlite_path(ddir).exists() if source == "sqlite"
             else pg.initialised(server.postgres_dir(ddir)))
    if not there:
        raise ServerError(f"the Label Studio in {ddir} has no {source} database to move")


def _move(config: ReviewConfig, ddir: Path, source: str, target: str, dump: Path, echo) -> int:
    env = server.label_studio_env(config, ddir)
    source_env, _ = server.start_database(config, ddir, source, echo)
    echo(f"dumping the {source} database")
    dumped = _dump(config, ddir, {**env, **source_env}, dump)
    server.stop(config)  # PostgreSQL, when it was the source
    target_env, _ = server.start_database(config, ddir, target, echo)
    _check_target_empty(config, ddir, target)
    echo(f"creating Label Studio's tables in {target} (Django migrate; a minute or two)")
    _manage(config, ddir, {**env, **target_env}, "migrate", "--no-color", "-v", "0")
    echo(f"loading {sum(dumped.values())} objects into {target}")
    _manage(config, ddir, {**env, **target_env}, "loaddata", str(dump))
    loaded = _dump(config, ddir, {**env, **target_env}, dump.with_name("check.json"))
    if loaded != dumped:
        diff = {m: (dumped.get(m, 0), loaded.get(m, 0)) for m in dumped.keys() | loaded.keys()
                if dumped.get(m, 0) != loaded.get(m, 0)}
        raise ServerError(f"the {target} database does not hold what was dumped (model: dumped, loaded): "
                          f"{diff}; the {source} database is unchanged and still the one used")
    return sum(dumped.values())


def _dump(config: ReviewConfig, ddir: Path, env: dict, out: Path) -> Counter:
    """dumpdata into `out`; objects per model."""
    _manage(config, ddir, env, "dumpdata", "--natural-foreign", *[f"--exclude={name}" for name in EXCLUDE],
            "-o", str(out))
    return Counter(obj["model"] for obj in json.loads(out.read_text()))


def _check_target_empty(config: ReviewConfig, ddir: Path, target: str) -> None:
    if target == "sqlite":
        if server.sqlite_path(ddir).exists():
            raise ServerError(f"{server.sqlite_path(ddir)} already exists; move it away first")
        return
    pgdata, password = server.postgres_dir(ddir), server.postgres_password(ddir, config)
    bindir = pg.bin_dir(install=False)
    if pg.table_count(bindir, pg.running(bindir, pgdata), password):
        raise ServerError(f"the PostgreSQL database in {pgdata} already has Label Studio tables; to move "
                          f"into a fresh one, stop the server and remove {pgdata} first")


def _manage(config: ReviewConfig, ddir: Path, env: dict, *args: str) -> None:
    """A Django management command of Label Studio, in its virtualenv and with its settings."""
    run_in_label_studio(config, ddir, env, MANAGE, *args, what=f"`manage.py {args[0]}`")


def run_in_label_studio(config: ReviewConfig, ddir: Path, env: dict, script: str, *args: str,
                        what: str = "a script") -> str:
    """Run `script` (Python source) in Label Studio's virtualenv with its package folder on
    PYTHONPATH, as its manage.py runs; its stdout."""
    venv = server.venv_dir(config)
    found = glob.glob(str(venv / "lib" / "python*" / "site-packages" / "label_studio" / "manage.py"))
    if not found:
        raise ServerError(f"Label Studio's manage.py is not in {venv}")
    cmd = [str(venv / "bin" / "python"), "-c", script, *args]
    env = {**env, "PYTHONPATH": str(Path(found[0]).parent)}
    proc = subprocess.run(cmd, env=env, cwd=str(ddir), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise ServerError(f"Label Studio's {what} failed ({proc.returncode}):\n{tail}")
    return proc.stdout
