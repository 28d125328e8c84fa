"""SIMULATED annotators for demos and tests: real Label Studio users (signed up through the invite
link) who submit annotations through the API with seeded tastes and error rates. Nothing here is
a human judgement; every output says so."""
from __future__ import annotations

import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from photogenic.annotation.lsclient import Client, Unavailable
from photogenic.annotation.projects import RATINGS, find_project, has_ratings, label_config
from photogenic.annotation.server import data_dir
from photogenic.annotation.users import AnnotatorStore
from photogenic.pipeline.core.config.review import ReviewConfig, pass_label, pass_number
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import write_json_atomic

SCORE_COLUMNS = ("aesthetic_score", "clip_score", "engagement")
# Per kind of label config (keep/drop only, or with ratings): the share of votes that are "keep"
# per simulated annotator (with pass 1's any-rule and pass 2's majority + rating rule this lands
# each pass near the paper's 1/10), and the mean seconds per answer.
TARGET_KEEP = {"keep": 0.055, "rate": 0.16}
MEAN_SECONDS = {"keep": 3.0, "rate": 25.0}


SIMULATED_EMAIL = re.compile(r"^sim-[a-z][a-z0-9_]*-\d+@photogenic\.local$")


def is_simulated_annotator(email: str) -> bool:
    return bool(SIMULATED_EMAIL.match(email or ""))


class SimulationError(RuntimeError):
    pass


@dataclass
class Persona:
    email: str
    weights: list[float]  # taste: how much each model score matters to this annotator
    noise: float  # how differently from the others this annotator sees an image
    error_rate: float  # share of answers flipped by mistake
    bias: float  # leniency: shifts the keep threshold


def personas(n: int, k: int, seed: int, group: str = "generalist") -> list[Persona]:
    """k seeded annotators of `group` for pass number n."""
    out = []
    for i in range(k):
        rng = np.random.default_rng([seed, n, i])
        out.append(Persona(
            email=f"sim-{group}-{i + 1}@photogenic.local",
            weights=[float(w) for w in rng.dirichlet([2.0] * len(SCORE_COLUMNS))],
            noise=float(rng.uniform(0.3, 0.7)),
            error_rate=float(rng.uniform(0.02, 0.08)),
            bias=float(rng.normal(0.0, 0.15)),
        ))
    return out


def _key_rng(seed: int, n: int, key: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, n, salt, zlib.crc32(key.encode())])


def _standardised(tasks: list[dict]) -> np.ndarray:
    cols = []
    for name in SCORE_COLUMNS:
        vals = np.array([t["data"].get(name) if t["data"].get(name) is not None else np.nan
                         for t in tasks], dtype=float)
        if np.all(np.isnan(vals)):
            vals = np.zeros(len(tasks))
        vals = np.where(np.isnan(vals), np.nanmean(vals), vals)
        sd = vals.std()
        cols.append((vals - vals.mean()) / sd if sd > 0 else vals * 0)
    return np.stack(cols, axis=1)


def plan(tasks: list[dict], people: list[Persona], n: int, seed: int, kind: str = "keep",
         keep_share: float | None = None) -> dict[int, list[dict]]:
    """task id -> the (persona index, answer) pairs this simulation would submit. kind "rate"
    also rates; keep_share: the share of keep votes aimed at (None: TARGET_KEEP[kind])."""
    keep_share = TARGET_KEEP[kind] if keep_share is None else keep_share
    scores = _standardised(tasks)
    # A shared "true" quality that no model score fully sees, so annotators agree beyond the scores.
    shared = np.array([_key_rng(seed, n, t["data"]["key"]).normal(0, 0.6) for t in tasks])
    perceived = []
    for i, p in enumerate(people):
        own = np.array([_key_rng(seed, n, t["data"]["key"], salt=i + 1).normal(0, p.noise) for t in tasks])
        perceived.append(scores @ np.array(p.weights) + shared + own)
    answers: dict[int, list[dict]] = {}
    for j, task in enumerate(tasks):
        rng = _key_rng(seed, n, task["data"]["key"], salt=1000)
        order = rng.permutation(len(people))[: min(task.get("overlap", 1), len(people))]
        answers[task["id"]] = [_answer(i, people[i], perceived[i], j, kind, keep_share, rng) for i in order]
    return answers


def _answer(i: int, person: Persona, perceived: np.ndarray, j: int, kind: str, keep_share: float,
            rng: np.random.Generator) -> dict:
    threshold = np.quantile(perceived, 1 - keep_share) + person.bias
    margin = (perceived[j] - threshold) / (perceived.std() or 1.0)
    keep = bool(margin > 0)
    if rng.random() < person.error_rate:
        keep = not keep
    result = [{"from_name": "decision", "to_name": "image", "type": "choices",
               "value": {"choices": ["keep" if keep else "drop"]}}]
    if kind == "rate":
        base = 3.3 + 1.2 * margin + (0.4 if keep else -0.4)
        for name in RATINGS:
            rating = int(np.clip(np.rint(base + rng.normal(0, 0.6)), 1, 5))
            result.append({"from_name": name, "to_name": "image", "type": "rating",
                           "value": {"rating": rating}})
    lead_time = float(rng.lognormal(np.log(MEAN_SECONDS[kind]), 0.4))
    return {"persona": i, "keep": keep, "result": result, "lead_time": round(lead_time, 2)}


def simulate(run: Path, ref: str | int, client: Client, config: ReviewConfig, annotators: int = 3,
             seed: int = 0, store: AnnotatorStore | None = None, workers: int = 4,
             keep_share: float | None = None, echo: Callable[[str], None] = print) -> dict:
    run = RunDir.of(run).root
    p = config.pass_config(ref)
    n = pass_number(config, p.name)
    label = pass_label(p.name)
    project = find_project(client, run, p.name)
    if project is None:
        raise SimulationError(f"no {label} project for {run}; push it first")
    kind = "rate" if has_ratings(label_config(p)) else "keep"
    people = personas(n, annotators, seed, p.annotator_group)
    store = store or AnnotatorStore(data_dir(config) / "annotators.json")
    accounts = [store.ensure(client, person.email) for person in people]
    echo(f"SIMULATION: {annotators} simulated {p.annotator_group} annotators "
         f"(seed {seed}) answer {label} through Label Studio's API; these are not human judgements")
    tasks = [t for t in client.tasks(project["id"], fields="all") if "key" in (t.get("data") or {})]
    answers = plan(tasks, people, n, seed, kind, keep_share)
    done_by = {t["id"]: set(t.get("annotators") or []) for t in tasks}
    jobs = [(tid, a) for tid, plan_ in answers.items() for a in plan_
            if accounts[a["persona"]]["id"] not in done_by[tid]]
    clients = [client.as_user(acc["token"]) for acc in accounts]
    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: _submit(client, clients[job[1]["persona"]],
                                          accounts[job[1]["persona"]]["id"], *job), jobs))
    seconds = time.monotonic() - t0
    votes = [a for plan_ in answers.values() for a in plan_]
    summary = {
        "simulated": True,
        "note": "SIMULATION: seeded synthetic annotators, not human judgements",
        "pass": n, "seed": seed, "project_id": project["id"], "tasks": len(tasks),
        "annotations_submitted": len(jobs), "annotations_planned": len(votes),
        "seconds": round(seconds, 2),
        "personas": [asdict(person) for person in people],
        "keep_votes": sum(a["keep"] for a in votes),
    }
    write_json_atomic(summary, RunDir.of(run).review(p.name) / "simulation.json")
    echo(f"SIMULATION: submitted {len(jobs)} annotation(s) on {len(tasks)} task(s) in {seconds:.1f}s "
         f"({summary['keep_votes']} keep votes of {len(votes)})")
    return summary


def _submit(admin: Client, user: Client, user_id: int, task_id: int, answer: dict) -> None:
    """Create one annotation; after a failure, check it did not land before sending it again."""
    body = {"result": answer["result"], "lead_time": answer["lead_time"]}
    for attempt in range(admin.max_retries + 1):
        try:
            user.request("POST", f"/api/tasks/{task_id}/annotations/", retry=False, json=body)
            return
        except Unavailable:
            time.sleep(min(admin.backoff_max_s, admin.backoff_s * 2 ** attempt))
            task = admin.get(f"/api/tasks/{task_id}/")
            authors = [a.get("completed_by") for a in task.get("annotations") or []]
            if any((a.get("id") if isinstance(a, dict) else a) == user_id for a in authors):
                return
    raise Unavailable(f"could not submit a simulated annotation for task {task_id}")
