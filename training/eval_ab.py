"""Human A/B evaluation in Label Studio: the paper's two questions over the pairs of `eval`.

Visual appeal is asked with the prompt hidden (left / right / tie); text faithfulness with the
prompt shown (left / right / both / neither; both and neither count as ties). Each question is
its own Label Studio project, because the prompt must be invisible in one and visible in the
other; each project asks for as many raters per task as the paper used (5 and 3 by default).
Which side shows the tuned image is drawn per task from a seeded RNG, recorded in
OUT/ab/tasks.parquet (never in the task data the annotator sees), and undone by `pull`. Images
are served under opaque names (OUT/ab/media), so no URL gives the model away.
Votes of SIMULATED raters (`photogenic eval simulate`, training/eval_simulate.py) are flagged
`simulated` in OUT/ab/votes.parquet, and OUT/human_results.json says `"simulated": true`.

Reuses the review stage's server, client, task sets (find-or-create by marker, idempotent batched
import with the `[review]` retry policy) and local-files media serving (`annotation.*`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from photogenic.annotation import media
from photogenic.annotation.lsclient import Client
from photogenic.annotation.simulate import is_simulated_annotator
from photogenic.annotation.tasksets import ImportPolicy, TaskSet
from photogenic.pipeline.core.config.training import EvalConfig
from photogenic.pipeline.core.runio import (mark_success, publishing, read_json, stable_id, write_json_atomic,
                                            write_parquet_atomic)
from photogenic.training.eval import table_by_category

log = logging.getLogger(__name__)

QUESTIONS = ("appeal", "faithfulness")
TIE_CHOICES = {"appeal": ("Tie",), "faithfulness": ("Both", "Neither")}

_IMAGES = """  <View style="display: flex; gap: 24px; align-items: flex-start">
    <View><Header size="5" value="Left"/><Image name="left" value="$left" maxWidth="512px"/></View>
    <View><Header size="5" value="Right"/><Image name="right" value="$right" maxWidth="512px"/></View>
  </View>"""

LABEL_CONFIGS = {
    "appeal": f"""<View>
  <Header value="Which image is more visually appealing? (Judge the picture only: there is no prompt.)"/>
{_IMAGES}
  <Choices name="appeal" toName="left" choice="single-radio" showInline="true" required="true">
    <Choice value="Left" hotkey="1"/>
    <Choice value="Right" hotkey="2"/>
    <Choice value="Tie" hotkey="3"/>
  </Choices>
</View>""",
    "faithfulness": f"""<View>
  <Header value="Which image follows the prompt better?"/>
  <Text name="prompt" value="$prompt"/>
{_IMAGES}
  <Choices name="faithfulness" toName="left" choice="single-radio" showInline="true" required="true">
    <Choice value="Left" hotkey="1"/>
    <Choice value="Right" hotkey="2"/>
    <Choice value="Both" hotkey="3"/>
    <Choice value="Neither" hotkey="4"/>
  </Choices>
</View>""",
}


class ABError(RuntimeError):
    pass


def ab_dir(out: Path) -> Path:
    return Path(out) / "ab"


def ab_id(out: Path) -> str:
    """A stable id for this eval folder (created once), naming its projects and media link."""
    return stable_id(ab_dir(out) / "ab_id")


def marker(aid: str, question: str) -> str:
    return f"[photogenic eval={aid} question={question}]"


def tuned_side(seed: int, pair_id: str, question: str) -> str:
    """Left or right for the tuned image: seeded, per task, stable across reruns and machines."""
    digest = hashlib.sha256(f"{seed}:{pair_id}:{question}".encode()).digest()
    return "left" if random.Random(digest).random() < 0.5 else "right"


def read_pairs(out: Path) -> list[dict]:
    path = Path(out) / "pairs.parquet"
    if not path.exists():
        raise ABError(f"{path} not found: run `photogenic eval --base ... --tuned ... --out {out}` first")
    return pq.read_table(path).to_pylist()


# --- projects -------------------------------------------------------------------------------------


def taskset(client: Client, aid: str, question: str, policy: ImportPolicy | None = None) -> TaskSet:
    """The question's project; the server is its pair_id -> task id ledger."""
    return TaskSet(client, marker(aid, question), key_field="pair_id", policy=policy)


def find_project(client: Client, aid: str, question: str) -> dict | None:
    return taskset(client, aid, question).find()


def ensure_project(tasks: TaskSet, out: Path, aid: str, question: str, raters: int) -> dict:
    name = Path(out).resolve().name[:16]
    return tasks.ensure({
        "title": f"Photogenic A/B {question} {name} {aid[:6]}"[:50],
        "description": f"Base vs tuned, {question}, pairs of {Path(out).resolve()} {marker(aid, question)}",
        "show_skip_button": True,
        "enable_empty_annotation": False,
        "sampling": "Uniform sampling",
    }, {"label_config": LABEL_CONFIGS[question], "maximum_annotations": raters,
        "overlap_cohort_percentage": 100})


def blind_name(aid: str, image: str) -> str:
    """An opaque file name: a URL like .../tuned/p0001.png would tell raters which model is which."""
    return hashlib.sha256(f"{aid}:{image}".encode()).hexdigest()[:24] + Path(image).suffix


def blind_media(out: Path, pairs: list[dict], aid: str) -> Path:
    """OUT/ab/media/<opaque>.png for every image of `pairs` (pass all of them: the folder is
    republished whole, hard links where possible, when an image is missing)."""
    media_dir = ab_dir(out) / "media"
    images = {blind_name(aid, image): Path(out) / image
              for pair in pairs for image in (pair["base_image"], pair["tuned_image"])}
    if all((media_dir / name).exists() for name in images):
        return media_dir
    with publishing(media_dir) as tmp:
        for name, source in images.items():
            try:
                os.link(source, tmp / name)
            except OSError:
                shutil.copyfile(source, tmp / name)
    return media_dir


def build_task(pair: dict, question: str, side: str, aid: str) -> dict:
    tuned = media.image_url(aid, blind_name(aid, pair["tuned_image"]))
    base = media.image_url(aid, blind_name(aid, pair["base_image"]))
    left, right = (tuned, base) if side == "left" else (base, tuned)
    data = {"pair_id": pair["pair_id"], "left": left, "right": right}
    if question == "faithfulness":
        data["prompt"] = pair["prompt"]
    return {"data": data}


def push(out: str | Path, client: Client, cfg: EvalConfig, limit: int | None = None,
         echo: Callable[[str], None] = print, policy: ImportPolicy | None = None) -> dict[str, Any]:
    """Create (or complete) both A/B projects; idempotent: one task per pair and question, ever.
    `policy`: import batches and retries (`[review]`; None: its defaults)."""
    out = Path(out)
    pairs = read_pairs(out)[:limit] if limit else read_pairs(out)
    if client.conn.local_files_root is None:
        raise ABError("images are served by Label Studio's local-files storage: set [review] local_files_root")
    aid = ab_id(out)
    link = media.link_into_root(blind_media(out, read_pairs(out), aid), client.conn.local_files_root, aid)
    raters = {"appeal": cfg.appeal_raters, "faithfulness": cfg.faithfulness_raters}
    records, summary = [], {"ab_id": aid, "projects": {}}
    for question in QUESTIONS:
        tasks = taskset(client, aid, question, policy)
        project = ensure_project(tasks, out, aid, question, raters[question])
        tasks.ensure_local_storage(link)
        existing = tasks.known_keys()
        sides = {p["pair_id"]: tuned_side(cfg.seed, p["pair_id"], question) for p in pairs}
        todo = [build_task(p, question, sides[p["pair_id"]], aid) for p in pairs if p["pair_id"] not in existing]
        imported = tasks.import_tasks(todo, echo=lambda m: log.info("%s", m)).imported
        final = tasks.known_keys()
        for p in pairs:
            if p["pair_id"] in final:
                records.append({"question": question, "pair_id": p["pair_id"], "category": p["category"],
                                "tuned_side": sides[p["pair_id"]], "project_id": project["id"],
                                "task_id": final[p["pair_id"]]})
        summary["projects"][question] = {"project_id": project["id"], "title": project["title"],
                                         "raters": raters[question], "imported": imported, "tasks": len(final),
                                         "url": f"{client.url}/projects/{project['id']}/data"}
        echo(f"{question}: project {project['id']}, {imported} new task(s), {len(final)} in total")
    write_parquet_atomic(pa.Table.from_pylist(records, schema=TASK_SCHEMA), ab_dir(out) / "tasks.parquet")
    write_json_atomic(summary, ab_dir(out) / "push.json")
    return summary


TASK_SCHEMA = pa.schema([("question", pa.string()), ("pair_id", pa.string()), ("category", pa.string()),
                         ("tuned_side", pa.string()), ("project_id", pa.int64()), ("task_id", pa.int64())])
VOTE_SCHEMA = pa.schema([("question", pa.string()), ("pair_id", pa.string()), ("category", pa.string()),
                         ("task_id", pa.int64()), ("annotation_id", pa.int64()), ("annotator", pa.string()),
                         ("choice", pa.string()), ("tuned_side", pa.string()), ("outcome", pa.string()),
                         ("lead_time", pa.float64()),
                         ("simulated", pa.bool_())])  # from `photogenic eval simulate`, not a person


# --- pull -----------------------------------------------------------------------------------------


def vote_outcome(question: str, choice: str, side: str) -> str:
    """The tuned model's result for one vote, undoing the left/right placement."""
    if choice in TIE_CHOICES[question]:
        return "tie"
    if choice.lower() not in ("left", "right"):
        raise ABError(f"unexpected {question} answer {choice!r}")
    return "win" if choice.lower() == side else "loss"


def task_outcome(outcomes: list[str]) -> str | None:
    """A task is a win when more of its raters preferred the tuned image than the base one."""
    if not outcomes:
        return None
    wins, losses = outcomes.count("win"), outcomes.count("loss")
    return "win" if wins > losses else "loss" if losses > wins else "tie"


def _choice(annotation: dict, question: str) -> str | None:
    for item in annotation.get("result") or []:
        if item.get("from_name") == question:
            choices = (item.get("value") or {}).get("choices") or []
            return choices[0] if choices else None
    return None


def pull(out: str | Path, client: Client, cfg: EvalConfig) -> dict[str, Any]:
    """Every annotation of both projects -> OUT/ab/votes.parquet and OUT/human_results.json."""
    out = Path(out)
    tasks_path = ab_dir(out) / "tasks.parquet"
    if not tasks_path.exists():
        raise ABError(f"{tasks_path} not found: run `photogenic eval push --out {out}` first")
    placements = {(r["question"], r["pair_id"]): r for r in pq.read_table(tasks_path).to_pylist()}
    aid = ab_id(out)
    users = {u["id"]: u.get("email") or u.get("username") for u in client.users()}
    votes, results = [], {"ab_id": aid, "tables": {}, "votes": {}, "tasks": {}, "notes": []}
    for question in QUESTIONS:
        project = find_project(client, aid, question)
        if project is None:
            raise ABError(f"no {question} project for {out} at {client.url}; run `photogenic eval push` first")
        # The task list with fields=all carries every annotation (as annotation.pull reads it).
        for task in client.tasks(project["id"], fields="all", page_size=1000):
            pair_id = str((task.get("data") or {}).get("pair_id"))
            placed = placements.get((question, pair_id))
            if placed is None:
                log.warning("task %s (%s) is not in %s: ignored", task.get("id"), pair_id, tasks_path)
                continue
            for ann in task.get("annotations") or []:
                choice = _choice(ann, question)
                if ann.get("was_cancelled") or choice is None:
                    continue  # skipped: not a vote
                uid = ann.get("completed_by")
                uid = uid.get("id") if isinstance(uid, dict) else uid
                annotator = users.get(uid, f"user-{uid}")
                votes.append({"question": question, "pair_id": pair_id, "category": placed["category"],
                              "task_id": task["id"], "annotation_id": ann["id"],
                              "annotator": annotator, "choice": choice,
                              "tuned_side": placed["tuned_side"],
                              "outcome": vote_outcome(question, choice, placed["tuned_side"]),
                              "lead_time": ann.get("lead_time"),
                              "simulated": is_simulated_annotator(annotator)})
    votes.sort(key=lambda v: (v["question"], v["pair_id"], v["annotation_id"]))
    raters = {"appeal": cfg.appeal_raters, "faithfulness": cfg.faithfulness_raters}
    for question in QUESTIONS:
        qvotes = [v for v in votes if v["question"] == question]
        by_task: dict[str, list[dict]] = defaultdict(list)
        for v in qvotes:
            by_task[v["pair_id"]].append(v)
        task_rows = [{"category": vs[0]["category"], "outcome": task_outcome([v["outcome"] for v in vs])}
                     for vs in by_task.values()]
        results["tables"][question] = table_by_category(task_rows, "outcome")
        results["votes"][question] = table_by_category(qvotes, "outcome")
        placed = [p for p in placements.values() if p["question"] == question]
        results["tasks"][question] = {
            "pushed": len(placed), "with_votes": len(by_task),
            "complete": sum(len(vs) >= raters[question] for vs in by_task.values()),
            "raters_wanted": raters[question], "votes": len(qvotes),
            "simulated_votes": sum(v["simulated"] for v in qvotes),
            "tuned_on_left": sum(p["tuned_side"] == "left" for p in placed),
        }
    simulated = sum(v["simulated"] for v in votes)
    results["simulated"] = simulated > 0
    if simulated:
        results["notes"].insert(0, f"SIMULATION: {simulated} of {len(votes)} votes come from SIMULATED raters "
                                   "(`photogenic eval simulate`), not from people")
    pairs_results = Path(out) / "results.json"
    if (read_json(pairs_results) or {}).get("meaningless"):
        results["notes"].append("the models compared are tiny/random test models: these preferences mean nothing")
    results["notes"].append("a task is a win when more raters preferred the tuned image than the base one; "
                            "faithfulness 'both' and 'neither' count as ties; Wilson 95% intervals")
    write_parquet_atomic(pa.Table.from_pylist(votes, schema=VOTE_SCHEMA), ab_dir(out) / "votes.parquet")
    write_json_atomic(results, out / "human_results.json")
    mark_success(ab_dir(out))
    return results
