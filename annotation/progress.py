"""Review progress per pass (done/total, ETA from the recent rate) and quality figures, live from
Label Studio when it answers, else from the last pull."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path


from photogenic.annotation.lsclient import Client, LabelStudioError
from photogenic.annotation.projects import taskset
from photogenic.annotation.pull import default_overlap, load_gold_file, parse_annotation
from photogenic.annotation.quality import summarise
from photogenic.pipeline.core.config.review import ReviewConfig, pass_number
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


def live_pass_status(run: Path, name: str, client: Client, config: ReviewConfig) -> dict | None:
    tasks_set = taskset(client, run, name, config)
    project = tasks_set.find()
    if project is None:
        return None
    n = pass_number(config, name)
    gold = load_gold_file(RunDir.of(run).review(name))
    users = {u["id"]: u["email"] for u in client.users()}
    keys = tasks_set.known_keys()
    overlap = default_overlap(project, config.pass_config(name), gold, keys)
    rows = []
    for t in client.annotated_tasks(project["id"]):
        if "key" not in (t.get("data") or {}):
            continue
        overlap[str(t["data"]["key"])] = t.get("overlap") or 1
        for ann in t.get("annotations") or []:
            rows.append(parse_annotation(str(t["data"]["key"]), t["id"], ann, n, users, gold))
    tasks = [{"data": {"key": k}, "overlap": v} for k, v in overlap.items()]
    return {"pass": n, "name": name, "source": "live", "project_id": project["id"],
            "project_title": project["title"], **_progress(tasks, rows), "quality": summarise(rows, gold)}


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
