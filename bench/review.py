"""Review at Emu's scale: 200,000 pool images through pass 1 as grid tasks on Label Studio with
PostgreSQL -> bench/results/review.json.

Starts its own Label Studio (`--db postgres` by default: a private PostgreSQL, temporary data dir,
free port on 127.0.0.1), builds a run whose candidates reuse a few real photographs under 200,000
keys, and measures, each step a separate `photogenic` command (wall seconds and peak RSS of that
process, from wait4):
  - `review push` of all images as pass-1 grid tasks (16 images a task) into an empty project;
  - a re-push (nothing to import: the idempotency check alone);
  - SIMULATED decisions on every image: the simulator's seeded annotators answer every grid
    (overlap as configured), attached in bulk through Label Studio's own ORM in its virtualenv
    (bulk_create + its counter update), because the API takes ~7 annotations/s on 2 cores;
    every annotator is a `sim-*` account, so every row is flagged simulated;
  - `review pull` (the first: every annotated task), `review status`;
  - 200 more annotations through the API, then an incremental `review pull` (only those tasks;
    the bench waits out the pull's 60 s safety margin after the bulk attach, so the first pull's
    start is later than the attached work, as after a day of annotation).
Review images are materialised for 200 keys (rate measured) and hard-linked for the rest, so the
push measures Label Studio's side, not JPEG encoding.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from photogenic.annotation import media, server  # noqa: E402
from photogenic.annotation.migrate_db import run_in_label_studio  # noqa: E402
from photogenic.annotation.lsclient import Client  # noqa: E402
from photogenic.annotation.projects import find_project  # noqa: E402
from photogenic.annotation.pull import SINCE_MARGIN_S  # noqa: E402
from photogenic.annotation.simulate import Tastes, personas, task_items  # noqa: E402
from photogenic.annotation.users import AnnotatorStore  # noqa: E402
from photogenic.pipeline.core.config import load_config  # noqa: E402
from photogenic.pipeline.core.runio import read_parquet, write_json_atomic  # noqa: E402
from tests.annotation.helpers import free_port, make_fake_run  # noqa: E402

BOUNDS = {"push_seconds": 600, "pull_seconds": 300, "status_seconds": 10, "peak_rss_gib": 2.0}
ANNOTATORS = 3

# Runs in Label Studio's virtualenv with its package folder on PYTHONPATH: bulk-creates the
# annotations in argv[1] (JSON lines: task_id, email, result, lead_time), then lets Label Studio
# recount its tasks (total_annotations, is_labeled) and marks them updated, as saving would.
ATTACH = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
import django
django.setup()
from django.utils import timezone
from projects.models import Project
from tasks.models import Annotation, Task
from users.models import User

rows = [json.loads(line) for line in open(sys.argv[1])]
project = Project.objects.get(id=int(sys.argv[2]))
users = {u.email: u for u in User.objects.filter(email__in={r["email"] for r in rows})}
now = timezone.now()
Annotation.objects.bulk_create([
    Annotation(task_id=r["task_id"], project=project, completed_by=users[r["email"]],
               result=r["result"], lead_time=r["lead_time"], created_at=now, updated_at=now)
    for r in rows], batch_size=2000)
tasks = Task.objects.filter(project=project)
project.update_tasks_counters_and_is_labeled(tasks)
tasks.update(updated_at=timezone.now())
print(len(rows))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--batch", type=int, default=500, help="grid tasks per import request")
    ap.add_argument("--api-annotations", type=int, default=200, help="annotated through the API "
                    "before the incremental pull")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "review.json")
    args = ap.parse_args()

    # The PostgreSQL server runs as its own user: the data dir must be reachable by it.
    work = Path(tempfile.mkdtemp(prefix="photogenic-bench-review-", dir="/tmp"))
    work.chmod(0o755)
    cfg_path = work / "photogenic.toml"
    cfg_path.write_text(
        f'[review]\nport = {free_port()}\ndata_dir = "{work / "ls"}"\ndb = "{args.db}"\n'
        f'import_batch_size = {args.batch}\n[review.pass1]\ngrid_size = {args.grid}\n'
        'overlap_annotators = 2\noverlap_fraction = 0.1\n')
    config = load_config(cfg_path).review
    out: dict = {"images": args.images, "grid_size": args.grid, "database": args.db,
                 "import_batch_size_tasks": args.batch, "bounds": BOUNDS}
    try:
        t = time.perf_counter()
        conn = server.start(config, echo=lambda m: print(m, file=sys.stderr))
        out["server_first_start_seconds"] = round(time.perf_counter() - t, 1)
        client = Client(conn)
        run = work / "run"
        keys = make_fake_run(run, args.images, prefix="b")
        out["materialise_images_per_s"] = _media(run, keys, config)

        out["push"] = _measure(["review", "push", "--run", str(run), "--pass", "1", "--config", str(cfg_path)])
        out["repush_nothing_to_import"] = _measure(["review", "push", "--run", str(run), "--pass", "1",
                                                    "--config", str(cfg_path)])
        project = find_project(client, run, "pass1")
        out["tasks"] = client.project(project["id"])["task_number"]

        out["simulated_decisions"] = _attach(client, config, project["id"], work)
        # The decisions are older than the pull's safety margin when it starts (as a day's work
        # is), so the incremental pull below fetches only what changes after the first pull.
        time.sleep(SINCE_MARGIN_S + 1)
        out["pull_first"] = _measure(["review", "pull", "--run", str(run), "--pass", "1", "--config", str(cfg_path)])
        out["status"] = _measure(["review", "status", "--run", str(run), "--config", str(cfg_path), "--json"])
        out.update(_check(run, keys, out))

        out["api_annotations"] = _api_annotations(client, config, project["id"], args.api_annotations)
        out["pull_incremental"] = _measure(["review", "pull", "--run", str(run), "--pass", "1",
                                            "--config", str(cfg_path)])
        quality = json.loads((run / "review" / "pass1" / "quality.json").read_text())
        out["pull_incremental"]["tasks_fetched"] = quality["pull"]["tasks_fetched"]
        assert quality["n_annotations"] == out["annotation_rows"] + out["api_annotations"]["image_rows"]

        peak = max(out[s]["peak_rss_mib"] for s in ("push", "pull_first", "pull_incremental")) / 1024
        out["acceptance"] = {
            "push_seconds": [out["push"]["seconds"], out["push"]["seconds"] <= BOUNDS["push_seconds"]],
            "pull_seconds": [out["pull_first"]["seconds"], out["pull_first"]["seconds"] <= BOUNDS["pull_seconds"]],
            "status_seconds": [out["status"]["seconds"], out["status"]["seconds"] <= BOUNDS["status_seconds"]],
            "peak_rss_gib_push_pull": [round(peak, 2), peak <= BOUNDS["peak_rss_gib"]],
        }
        out.update({
            "label_studio": config.label_studio_version, "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2), "platform": platform.platform(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": "SIMULATED decisions (seeded sim-* annotators, attached in bulk); push timed with "
                    "review images already materialised (hard links of a few real photos)",
        })
        write_json_atomic(out, args.out)
        print(json.dumps(out, indent=2))
    finally:
        server.stop(config)
        shutil.rmtree(work, ignore_errors=True)


def _measure(argv: list[str]) -> dict:
    """Wall seconds and peak RSS of one `photogenic` command in its own process."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "photogenic.pipeline.cli", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"photogenic {' '.join(argv)} failed ({proc.returncode}):\n{output.decode()[-3000:]}")
    print(f"{' '.join(argv[:2])}: {seconds:.1f}s, peak {usage.ru_maxrss / 1024:.0f} MiB", file=sys.stderr)
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def _media(run: Path, keys: list[str], config) -> float:
    """Materialise 200 review images (rate), hard-link the rest to them (same pixels)."""
    sample = 200
    sources = read_parquet(run / "candidates" / "part-00000.parquet", columns=["source"])["source"].to_pylist()
    t = time.perf_counter()
    media.materialise_all(list(zip(keys[:sample], sources[:sample])), run / "review" / "media", config.media_max_side)
    rate = sample / (time.perf_counter() - t)
    folder = run / "review" / "media"
    firsts = [folder / media.media_name(k) for k in keys[:8]]
    for i, key in enumerate(keys[sample:], start=sample):
        target = folder / media.media_name(key)
        if not target.exists():
            os.link(firsts[i % 8], target)
    return round(rate, 1)


def _attach(client: Client, config, project_id: int, work: Path) -> dict:
    """SIMULATED answers to every task (the simulator's tastes, overlap as the project set it),
    created in bulk inside Label Studio."""
    t = time.perf_counter()
    tasks = [task for page in client.task_pages(project_id, fields="task_only") for task in page]
    list_s = time.perf_counter() - t
    p = config.pass_config(1)
    people = personas(1, ANNOTATORS, seed=0, group=p.annotator_group)
    store = AnnotatorStore(Path(config.data_dir) / "annotators.json")
    accounts = [store.ensure(client, person.email) for person in people]
    tastes = Tastes([it for task in tasks for it in task_items(task["data"])], people, 1, seed=0)
    path = work / "annotations.jsonl"
    n = 0
    with open(path, "w") as fh:
        for task in tasks:
            order = np.random.default_rng([0, task["id"]]).permutation(len(people))
            for i in order[: min(task.get("overlap") or 1, len(people))]:
                answer = tastes.answer(int(i), task["data"])
                fh.write(json.dumps({"task_id": task["id"], "email": accounts[i]["email"],
                                     "result": answer["result"], "lead_time": answer["lead_time"]}) + "\n")
                n += 1
    t = time.perf_counter()
    _in_label_studio(config, ATTACH, str(path), str(project_id))
    return {"annotations": n, "list_tasks_seconds": round(list_s, 2),
            "bulk_attach_seconds": round(time.perf_counter() - t, 2), "simulated": True}


def _in_label_studio(config, script: str, *args: str) -> None:
    """A Python script run in Label Studio's virtualenv against its database."""
    ddir = server.data_dir(config).resolve()
    env = {**server.label_studio_env(config, ddir),
           **server.start_database(config, ddir, config.db, lambda m: None)[0]}
    run_in_label_studio(config, ddir, env, script, *args, what="bulk attach")


def _check(run: Path, keys: list[str], out: dict) -> dict:
    """The pull has a decision for every image and every simulated answer once per image."""
    dec = read_parquet(run / "review" / "pass1" / "decisions.parquet", columns=["key", "keep", "n_annotations"])
    ann = read_parquet(run / "review" / "pass1" / "annotations.parquet", columns=["key", "annotation_id", "simulated"])
    assert sorted(dec["key"].to_pylist()) == sorted(keys)
    assert all(n >= 1 for n in dec["n_annotations"].to_pylist())
    assert all(ann["simulated"].to_pylist())
    assert len({(k, a) for k, a in zip(ann["key"].to_pylist(), ann["annotation_id"].to_pylist())}) == ann.num_rows
    return {"decisions": dec.num_rows, "kept": int(sum(dec["keep"].to_pylist())), "annotation_rows": ann.num_rows}


def _api_annotations(client: Client, config, project_id: int, n: int) -> dict:
    """n more grid answers through the API, by a simulated annotator who had not seen them."""
    store = AnnotatorStore(Path(config.data_dir) / "annotators.json")
    extra = store.ensure(client, "sim-generalist-99@photogenic.local")
    user = client.as_user(extra["token"])
    page = next(iter(client.task_pages(project_id, fields="task_only", page_size=n)))
    t = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda task: user.post(f"/api/tasks/{task['id']}/annotations/", json={
            "result": [], "lead_time": 10.0}), page[:n]))
    seconds = time.perf_counter() - t
    page = page[:n]
    return {"annotations": len(page), "image_rows": sum(len(task["data"]["keys"]) for task in page),
            "per_s_4_threads": round(len(page) / seconds, 1)}


if __name__ == "__main__":
    main()
