"""Review progress per pass (done/total, ETA from the recent rate) and quality figures, live from
Label Studio when it answers, else from the last pull."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.annotation.ledger import Ledger
from photogenic.annotation.lsclient import Client, LabelStudioError
from photogenic.annotation.projects import find_project, pass_dir
from photogenic.annotation.pull import default_overlap, load_gold_file, parse_annotation
from photogenic.annotation.push import known_keys
from photogenic.annotation.quality import summarise

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


def live_pass_status(run: Path, n: int, client: Client, config: ReviewConfig) -> dict | None:
    project = find_project(client, run, n)
    if project is None:
        return None
    gold = load_gold_file(pass_dir(run, n))
    users = {u["id"]: u["email"] for u in client.users()}
    keys = known_keys(client, project["id"], Ledger(pass_dir(run, n) / "ledger", project["id"]))
    overlap = default_overlap(project, config.for_pass(n), gold, keys)
    rows = []
    for t in client.annotated_tasks(project["id"]):
        if "key" not in (t.get("data") or {}):
            continue
        overlap[str(t["data"]["key"])] = t.get("overlap") or 1
        for ann in t.get("annotations") or []:
            rows.append(parse_annotation(str(t["data"]["key"]), t["id"], ann, n, users, gold))
    tasks = [{"data": {"key": k}, "overlap": v} for k, v in overlap.items()]
    return {"pass": n, "source": "live", "project_id": project["id"], "project_title": project["title"],
            **_progress(tasks, rows), "quality": summarise(rows, gold)}


def pulled_pass_status(run: Path, n: int) -> dict | None:
    out = pass_dir(run, n)
    if not (out / "annotations.parquet").exists():
        return None
    rows = pq.read_table(out / "annotations.parquet").to_pylist()
    dec = pq.read_table(out / "decisions.parquet", columns=["key", "required_annotations"]).to_pylist()
    tasks = [{"data": {"key": d["key"]}, "overlap": d["required_annotations"]} for d in dec]
    quality = json.loads((out / "quality.json").read_text()) if (out / "quality.json").exists() else \
        summarise(rows, load_gold_file(out))
    return {"pass": n, "source": "last pull", **_progress(tasks, rows), "quality": quality}


def decisions_summary(run: Path, n: int) -> dict | None:
    path = pass_dir(run, n) / "decisions.parquet"
    if not path.exists():
        return None
    keep = pq.read_table(path, columns=["keep"])["keep"].to_pylist()
    return {"keys": len(keep), "kept": int(sum(bool(k) for k in keep))}


def run_status(run: Path, client: Client | None, config: ReviewConfig) -> list[dict]:
    out = []
    for n in (1, 2):
        status = None
        if client is not None:
            try:
                status = live_pass_status(run, n, client, config)
            except LabelStudioError:
                status = None
        status = status or pulled_pass_status(run, n)
        if status is None:
            out.append({"pass": n, "source": "not pushed"})
            continue
        status["decisions"] = decisions_summary(run, n)
        sim = pass_dir(run, n) / "simulation.json"
        status["simulated"] = sim.exists()
        out.append(status)
    return out
