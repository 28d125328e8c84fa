"""Review progress per pass (done/total, ETA from the recent rate) and quality figures: progress
live from Label Studio's counters when it answers (a few requests, also at 200K images), else
from the last pull; quality figures from the last pull."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path


from photogenic.annotation.lsclient import ANNOTATED_QUERY, Client, LabelStudioError
from photogenic.annotation.projects import taskset
from photogenic.annotation.pull import load_gold_file
from photogenic.annotation.quality import summarise
from photogenic.pipeline.core.config.review import PassConfig, ReviewConfig, pass_number
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import read_json, read_parquet

RECENT = 200  # annotations the rate is measured over


def eta_seconds(created: list[datetime], remaining: int, now: datetime | None = None) -> tuple[float | None, float | None]:
    """(annotations per hour over the most recent ones, seconds left at that rate)."""
    if remaining <= 0:
        return None, 0.0
    recent = sorted(created)[-RECENT:]
    if len(recent) < 2:
        return None, None
    now = now or datetime.now(timezone.utc)
    span = (max(now, recent[-1]) - recent[0]).total_seconds()
    if span <= 0:
        return None, None
    rate = (len(recent) - 1) / span
    return rate * 3600, remaining / rate


def _progress(tasks: list[dict], rows: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for r in rows:
        if not r["skipped"]:
            counts[r["key"]] = counts.get(r["key"], 0) + 1
    required = {t["data"]["key"]: max(int(t.get("overlap") or 1), 1) for t in tasks}
    needed = sum(required.values())
    done = sum(min(counts.get(k, 0), need) for k, need in required.items())
    complete = sum(counts.get(k, 0) >= need for k, need in required.items())
    created = [r["created_at"] for r in rows if r["created_at"] is not None]
    created = [c if c.tzinfo else c.replace(tzinfo=timezone.utc) for c in created]
    rate, eta = eta_seconds(created, needed - done)
    return {"tasks": len(required), "tasks_complete": complete, "annotations_done": done,
            "annotations_needed": needed, "annotations_per_hour": rate, "eta_seconds": eta}


def expected_annotations(project: dict, cfg: PassConfig, n_tasks: int, n_gold_tasks: int) -> int:
    """Annotations the pass needs by the project's overlap settings: every task once, the
    overlap cohort `maximum_annotations` times, gold tasks `gold_annotators` times."""
    most = int(project.get("maximum_annotations") or 1)
    share = (project.get("overlap_cohort_percentage") or 0) / 100
    cohort = n_tasks if share >= 1 else round(n_tasks * share)
    gold_extra = n_gold_tasks * max(cfg.gold_annotators - (most if share >= 1 else 1), 0)
    return n_tasks + cohort * (most - 1) + gold_extra


def recent_annotation_times(client: Client, project_id: int) -> list[datetime]:
    """When the most recent annotations were made: one page of the last-updated tasks."""
    query = {"ordering": ["-tasks:updated_at"], **ANNOTATED_QUERY}
    page = next(iter(client.task_pages(project_id, fields="all", page_size=RECENT, query=query)), [])
    times = [ann.get("created_at") for t in page for ann in t.get("annotations") or []]
    return [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in times if v]


def live_pass_status(run: Path, name: str, client: Client, config: ReviewConfig) -> dict | None:
    """Progress from the project's own counters (one request, whatever the task count) and the
    most recent annotations; quality figures as of the last pull (a pull reads the annotations)."""
    tasks_set = taskset(client, run, name, config)
    project = tasks_set.find()
    if project is None:
        return None
    cfg = config.pass_config(name)
    out = RunDir.of(run).review(name)
    stats = client.project(project["id"])
    n_tasks = int(stats.get("task_number") or 0)
    done = int(stats.get("total_annotations_number") or 0) - int(stats.get("skipped_annotations_number") or 0)
    keys = tasks_set.known_keys()
    gold = load_gold_file(out)
    complete = int(stats.get("finished_task_number") or 0)
    expected = expected_annotations(stats, cfg, n_tasks, len({keys[k] for k in gold if k in keys}))
    needed = done + (max(expected - done, 1) if complete < n_tasks else 0)
    rate, eta = eta_seconds(recent_annotation_times(client, project["id"]), needed - done)
    pulled = read_json(out / "quality.json")
    return {"pass": pass_number(config, name), "name": name, "source": "live", "project_id": project["id"],
            "project_title": project["title"], "tasks": n_tasks, "images": len(keys),
            "tasks_complete": complete, "annotations_done": done,
            "annotations_needed": needed, "annotations_per_hour": rate, "eta_seconds": eta,
            "quality": pulled or summarise([], gold), "quality_source": "last pull" if pulled else "none yet"}


def pulled_pass_status(run: Path, name: str, n: int) -> dict | None:
    run = RunDir.of(run)
    out = run.review(name)
    if not run.annotations(name).exists():
        return None
    rows = read_parquet(run.annotations(name)).to_pylist()
    dec = read_parquet(run.decisions(name), columns=["key", "required_annotations"]).to_pylist()
    tasks = [{"data": {"key": d["key"]}, "overlap": d["required_annotations"]} for d in dec]
    quality = read_json(out / "quality.json") or summarise(rows, load_gold_file(out))
    return {"pass": n, "name": name, "source": "last pull", **_progress(tasks, rows), "quality": quality}


def decisions_summary(run: Path, name: str) -> dict | None:
    path = RunDir.of(run).decisions(name)
    if not path.exists():
        return None
    keep = read_parquet(path, columns=["keep"])["keep"].to_pylist()
    return {"keys": len(keep), "kept": int(sum(bool(k) for k in keep))}


def run_status(run: Path, client: Client | None, config: ReviewConfig) -> list[dict]:
    """One status per configured pass, in config order."""
    out = []
    for name in config.pass_names():
        n = pass_number(config, name)
        status = None
        if client is not None:
            try:
                status = live_pass_status(run, name, client, config)
            except LabelStudioError:
                status = None
        status = status or pulled_pass_status(run, name, n)
        if status is None:
            out.append({"pass": n, "name": name, "source": "not pushed"})
            continue
        status["decisions"] = decisions_summary(run, name)
        status["simulated"] = (RunDir.of(run).review(name) / "simulation.json").exists()
        out.append(status)
    return out
