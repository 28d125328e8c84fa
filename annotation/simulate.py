"""SIMULATED annotators for demos and tests: real Label Studio users (signed up through the invite
link) who take tasks from Label Studio's queue and submit annotations through the API with seeded
tastes and error rates. Nothing here is
a human judgement; every output says so."""
from __future__ import annotations

import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from photogenic.annotation.lsclient import Client, LabelStudioError, Unavailable
from photogenic.annotation.projects import RATINGS, find_project, has_ratings, label_config
from photogenic.annotation.server import data_dir
from photogenic.annotation.tasksets import GRID_KEYS
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
GRID_SECONDS_PER_IMAGE = 1.2  # a grid is judged at a glance, faster than one image a page
QUEUE_SETTLE_TRIES = 20  # 404s in a row, while tasks still want this annotator, before giving up (~35 s)


SIMULATED_EMAIL = re.compile(r"^sim-[a-z][a-z0-9_]*-\d+@photogenic\.local$")


def is_simulated_annotator(email: str) -> bool:
    return bool(SIMULATED_EMAIL.match(email or ""))


def simulated_email(group: str, i: int) -> str:
    """The account of simulated annotator i (0-based) of `group`: sim-GROUP-(i+1)@photogenic.local."""
    return f"sim-{group}-{i + 1}@photogenic.local"


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
            email=simulated_email(group, i),
            weights=[float(w) for w in rng.dirichlet([2.0] * len(SCORE_COLUMNS))],
            noise=float(rng.uniform(0.3, 0.7)),
            error_rate=float(rng.uniform(0.02, 0.08)),
            bias=float(rng.normal(0.0, 0.15)),
        ))
    return out


def _key_rng(seed: int, n: int, key: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, n, salt, zlib.crc32(key.encode())])


def _standardised(items: list[dict]) -> np.ndarray:
    cols = []
    for name in SCORE_COLUMNS:
        vals = np.array([it.get(name) if it.get(name) is not None else np.nan for it in items], dtype=float)
        if np.all(np.isnan(vals)):
            vals = np.zeros(len(items))
        vals = np.where(np.isnan(vals), np.nanmean(vals), vals)
        sd = vals.std()
        cols.append((vals - vals.mean()) / sd if sd > 0 else vals * 0)
    return np.stack(cols, axis=1)


def task_items(data: dict) -> list[dict]:
    """The images a task shows, each with its key and scores: a grid's images, or the task."""
    return list(data["images"]) if GRID_KEYS in data else [data]


class Tastes:
    """What each simulated annotator would answer for any image of the pass, fixed up front from
    the seed and every image's scores, so an answer depends on who sees which image, never on
    when or in which order the queue serves it."""

    def __init__(self, items: list[dict], people: list[Persona], n: int, seed: int,
                 kind: str = "keep", keep_share: float | None = None):
        self.people, self.n, self.seed, self.kind = people, n, seed, kind
        self.keep_share = TARGET_KEEP[kind] if keep_share is None else keep_share
        self.index = {str(it["key"]): j for j, it in enumerate(items)}
        scores = _standardised(items) if items else np.zeros((0, len(SCORE_COLUMNS)))
        # A shared "true" quality that no model score fully sees, so annotators agree beyond the scores.
        shared = np.array([_key_rng(seed, n, str(it["key"])).normal(0, 0.6) for it in items])
        self.perceived = []
        for i, p in enumerate(people):
            own = np.array([_key_rng(seed, n, str(it["key"]), salt=i + 1).normal(0, p.noise) for it in items])
            self.perceived.append(scores @ np.array(p.weights) + shared + own)
        self.thresholds = [np.quantile(v, 1 - self.keep_share) + p.bias if len(v) else 0.0
                           for v, p in zip(self.perceived, people)]

    def vote(self, i: int, key: str) -> tuple[bool, float, np.random.Generator]:
        """(keep, margin over the persona's threshold, the answer's own seeded generator)."""
        perceived = self.perceived[i]
        margin = float((perceived[self.index[key]] - self.thresholds[i]) / (perceived.std() or 1.0))
        rng = _key_rng(self.seed, self.n, key, salt=1000 + i)
        keep = margin > 0
        if rng.random() < self.people[i].error_rate:
            keep = not keep
        return bool(keep), margin, rng

    def answer(self, i: int, data: dict) -> dict:
        """Persona i's annotation of a task (one image, or a grid: a keep toggle per image)."""
        if GRID_KEYS in data:
            votes = [self.vote(i, str(k))[0] for k in data[GRID_KEYS]]
            result = [{"from_name": f"keep_{slot}", "to_name": f"image_{slot}", "type": "choices",
                       "value": {"choices": ["keep"]}} for slot, keep in enumerate(votes) if keep]
            rng = _key_rng(self.seed, self.n, str(data["key"]), salt=2000 + i)
            lead_time = float(rng.lognormal(np.log(GRID_SECONDS_PER_IMAGE * len(votes)), 0.3))
            return {"keeps": votes, "result": result, "lead_time": round(lead_time, 2)}
        keep, margin, rng = self.vote(i, str(data["key"]))
        result = [{"from_name": "decision", "to_name": "image", "type": "choices",
                   "value": {"choices": ["keep" if keep else "drop"]}}]
        if self.kind == "rate":
            base = 3.3 + 1.2 * margin + (0.4 if keep else -0.4)
            for name in RATINGS:
                rating = int(np.clip(np.rint(base + rng.normal(0, 0.6)), 1, 5))
                result.append({"from_name": name, "to_name": "image", "type": "rating",
                               "value": {"rating": rating}})
        lead_time = float(rng.lognormal(np.log(MEAN_SECONDS[self.kind]), 0.4))
        return {"keeps": [keep], "result": result, "lead_time": round(lead_time, 2)}


def simulate(run: Path, ref: str | int, client: Client, config: ReviewConfig, annotators: int = 3,
             seed: int = 0, store: AnnotatorStore | None = None, keep_share: float | None = None,
             echo: Callable[[str], None] = print) -> dict:
    """Simulated annotators work the pass the way people do: each, in its own thread, asks Label
    Studio's queue for its next task (which applies the project's overlap and sampling), answers
    it and submits, until the queue has nothing left for it."""
    run = RunDir.of(run).root
    p = config.pass_config(ref)
    n = pass_number(config, p.name)
    label = pass_label(p.name)
    project = find_project(client, run, p.name)
    if project is None:
        raise SimulationError(f"no {label} project for {run}; push it first")
    kind = "rate" if has_ratings(label_config(p)) else "keep"
    people = personas(n, annotators, seed, p.annotator_group)
    accounts = sign_up(client, [person.email for person in people],
                       store or AnnotatorStore(data_dir(config) / "annotators.json"))
    echo(f"SIMULATION: {annotators} simulated {p.annotator_group} annotators "
         f"(seed {seed}) answer {label} through Label Studio's task queue; these are not human judgements")
    items = [it for page in client.task_pages(project["id"], fields="task_only")
             for t in page if "key" in (t.get("data") or {}) for it in task_items(t["data"])]
    tastes = Tastes(items, people, n, seed, kind, keep_share)
    t0 = time.monotonic()
    work = work_queues(client, accounts, project["id"], lambda i, task: tastes.answer(i, task["data"]))
    seconds = time.monotonic() - t0
    votes = [answer["keeps"] for done in work for answer in done]
    summary = {
        "simulated": True,
        "note": "SIMULATION: seeded synthetic annotators, not human judgements",
        "pass": n, "seed": seed, "project_id": project["id"], "images": len(items),
        "annotations_submitted": len(votes), "via": "Label Studio task queue (/api/projects/ID/next)",
        "annotations_per_annotator": {people[i].email: len(done) for i, done in enumerate(work)},
        "seconds": round(seconds, 2),
        "personas": [asdict(person) for person in people],
        "keep_votes": sum(sum(v) for v in votes), "image_votes": sum(len(v) for v in votes),
    }
    write_json_atomic(summary, RunDir.of(run).review(p.name) / "simulation.json")
    echo(f"SIMULATION: submitted {len(votes)} annotation(s) through the queue in {seconds:.1f}s "
         f"({summary['keep_votes']} keep votes of {summary['image_votes']} image votes)")
    return summary


def sign_up(client: Client, emails: list[str], store: AnnotatorStore) -> list[dict]:
    """{email, id, token} per simulated annotator: real Label Studio users, signed up once."""
    return [store.ensure(client, email) for email in emails]


def work_queues(client: Client, accounts: list[dict], project_id: int,
                answer: Callable[[int, dict], dict]) -> list[list[dict]]:
    """Every account works the project's queue at once, each in its own thread; `answer(i, task)`
    is account i's annotation of a task ({"result", "lead_time", ...}). Returns the answers
    submitted, per account."""
    if not accounts:
        return []
    # Label Studio on SQLite has no SELECT ... FOR UPDATE: two /next calls at the same moment can
    # both lock a task's last free slot, and the task ends with more annotations than its overlap
    # (seen in CI: 21 answers where 20 were wanted). The annotators think in parallel; they take
    # tasks and submit one at a time, and check that the task still wants them before submitting.
    turn = threading.Lock()
    with ThreadPoolExecutor(len(accounts)) as pool:
        return list(pool.map(lambda i: work_queue(client, client.as_user(accounts[i]["token"]), accounts[i]["id"],
                                                  project_id, lambda task: answer(i, task), turn),
                             range(len(accounts))))


def work_queue(admin: Client, user: Client, user_id: int, project_id: int,
               answer: Callable[[dict], dict], turn: threading.Lock | None = None) -> list[dict]:
    """One simulated annotator's session: next task, answer, submit, until the queue is empty.
    Returns the answers submitted. `turn`, shared by colleagues, makes taking and submitting one at
    a time; a task that filled up meanwhile is left unanswered."""
    turn = turn or threading.Lock()
    done, idle, passed = [], 0, set()
    while True:
        try:
            with turn:
                task = user.get(f"/api/projects/{project_id}/next")
        except LabelStudioError as err:
            if "HTTP 404" not in str(err):  # 404: "There are no tasks for <user>"
                raise
            if idle >= QUEUE_SETTLE_TRIES or not _still_open(admin, project_id, user_id):
                return done
            idle += 1  # a colleague's submission is half done: ask again in a moment
            time.sleep(min(2.0, 0.25 * idle))
            continue
        if task["id"] in passed:  # served again though full: let the queue settle, as after a 404
            if idle >= QUEUE_SETTLE_TRIES:
                return done
            idle += 1
            time.sleep(min(2.0, 0.25 * idle))
            continue
        idle = 0
        given = answer(task)
        with turn:
            if not _wants(admin, task["id"], user_id):
                passed.add(task["id"])
                continue
            _submit(admin, user, user_id, task["id"], given)
        done.append(given)


def _still_open(admin: Client, project_id: int, user_id: int) -> bool:
    """Whether a task still wants an answer this user has not given. Label Studio's queue answers
    404 for a moment while another annotator's submission is half done (the annotation saved, its
    lock not yet released: the task counts that annotator twice and looks full)."""
    for page in admin.task_pages(project_id, fields="task_only"):
        for t in page:
            if (t.get("total_annotations") or 0) < (t.get("overlap") or 1) and not _answered(admin, t["id"], user_id):
                return True
    return False


def _answered(admin: Client, task_id: int, user_id: int) -> bool:
    return user_id in _authors(admin.get(f"/api/tasks/{task_id}/"))


def _wants(admin: Client, task_id: int, user_id: int) -> bool:
    """Whether the task still has a free slot (answers below its overlap) and none of them is this user's."""
    task = admin.get(f"/api/tasks/{task_id}/")
    authors = _authors(task)
    return len(authors) < (task.get("overlap") or 1) and user_id not in authors


def _authors(task: dict) -> list[int]:
    """Who answered the task (gold answers and skips do not count towards its overlap)."""
    return [a.get("completed_by", {}).get("id") if isinstance(a.get("completed_by"), dict) else a.get("completed_by")
            for a in task.get("annotations") or []
            if not a.get("ground_truth") and not a.get("was_cancelled")]


def _submit(admin: Client, user: Client, user_id: int, task_id: int, answer: dict) -> None:
    """Create one annotation; after a failure, check it did not land before sending it again."""
    body = {"result": answer["result"], "lead_time": answer["lead_time"]}
    for attempt in range(admin.max_retries + 1):
        try:
            user.request("POST", f"/api/tasks/{task_id}/annotations/", retry=False, json=body)
            return
        except Unavailable:
            time.sleep(min(admin.backoff_max_s, admin.backoff_s * 2 ** attempt))
            if _answered(admin, task_id, user_id):
                return
    raise Unavailable(f"could not submit a simulated annotation for task {task_id}")
