"""Pull a pass's annotations and turn them into one decision per image key by the pass's rule.

A pull is incremental: it fetches, a page at a time, only the tasks Label Studio updated since
the previous pull began (saving or deleting an annotation updates its task), and replaces those
tasks' rows in annotations.parquet; every other row is kept as pulled. So an annotation is never
lost or counted twice, and a pull after a day of work reads that day's tasks, not all 200K.
The first pull of a project (or `--full`) reads every annotated task."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from photogenic.annotation.lsclient import ANNOTATED_QUERY, Client
from photogenic.annotation.projects import RATINGS, taskset
from photogenic.annotation.push import PushError, pass_input
from photogenic.annotation.quality import summarise
from photogenic.annotation.simulate import is_simulated_annotator
from photogenic.annotation.tasksets import GRID_KEYS, task_keys
from photogenic.pipeline.core.config.review import PassConfig, ReviewConfig, pass_label, pass_number
from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import (clear_success, mark_success, read_json, read_parquet,
                                            write_json_atomic, write_parquet_atomic)
from photogenic.pipeline.core.summary import StageSummary, fingerprint, write_summary

ANNOTATION_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("pass", pa.int8()),
    ("task_id", pa.int64()),
    ("annotation_id", pa.int64()),
    ("annotator", pa.string()),
    ("annotator_id", pa.int64()),
    ("keep", pa.bool_()),  # null when the annotator skipped the task
    ("skipped", pa.bool_()),
    *[(name, pa.int8()) for name in RATINGS],
    ("mean_rating", pa.float64()),
    ("lead_time", pa.float64()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("updated_at", pa.timestamp("us", tz="UTC")),
    ("is_gold", pa.bool_()),
    ("gold_keep", pa.bool_()),
    ("simulated", pa.bool_()),  # submitted by `photogenic review simulate`, not a person
])


PULL_STATE = "pull_state.json"  # project id and when the last pull began (server clock)
SINCE_MARGIN_S = 60
PAGE_SIZE = 500  # tasks per page: memory of a pull is bounded by a page plus the pulled rows


log = logging.getLogger(__name__)


class PullError(RuntimeError):
    pass


def _ts(value: str | None):
    if not value:
        return None
    return np.datetime64(value.replace("Z", ""), "us").astype(object)


def parse_annotation(key: str, task_id: int, ann: dict, n: int, users: dict[int, str],
                     gold: dict[str, bool]) -> dict:
    uid = ann.get("completed_by")
    if isinstance(uid, dict):
        uid = uid.get("id")
    row = {"key": key, "pass": n, "task_id": task_id, "annotation_id": ann["id"],
           "annotator": users.get(uid, f"user-{uid}"), "annotator_id": uid,
           "keep": None, "skipped": bool(ann.get("was_cancelled")),
           **{name: None for name in RATINGS}, "mean_rating": None,
           "lead_time": ann.get("lead_time"), "created_at": _ts(ann.get("created_at")),
           "updated_at": _ts(ann.get("updated_at")), "is_gold": key in gold,
           "gold_keep": gold.get(key)}
    for item in ann.get("result") or []:
        value = item.get("value") or {}
        if item.get("from_name") == "decision" and value.get("choices"):
            row["keep"] = value["choices"][0] == "keep"
        elif item.get("from_name") in RATINGS and "rating" in value:
            row[item["from_name"]] = int(value["rating"])
    ratings = [row[name] for name in RATINGS if row[name] is not None]
    row["mean_rating"] = float(np.mean(ratings)) if ratings else None
    if row["skipped"]:
        row["keep"] = None
    return row


def parse_grid_annotation(keys: list[str], task_id: int, ann: dict, n: int, users: dict[int, str],
                          gold: dict[str, bool]) -> list[dict]:
    """One row per image of a grid task: kept when its keep_SLOT toggle is ticked, else dropped
    (a skip leaves every image undecided); the answer's time is shared across its images."""
    kept = set()
    for item in ann.get("result") or []:
        slot = (item.get("from_name") or "").removeprefix("keep_")
        if slot.isdigit() and "keep" in ((item.get("value") or {}).get("choices") or []):
            kept.add(int(slot))
    lead_time = ann.get("lead_time")
    share = {**ann, "result": [], "lead_time": lead_time / len(keys) if lead_time else lead_time}
    rows = []
    for slot, key in enumerate(keys):
        row = parse_annotation(key, task_id, share, n, users, gold)
        if not row["skipped"]:
            row["keep"] = slot in kept
        rows.append(row)
    return rows


def task_rows(task: dict, n: int, users: dict[int, str], gold: dict[str, bool]) -> list[dict]:
    """The annotation rows of one task (one per image per annotation)."""
    data = task.get("data") or {}
    keys = task_keys(data)
    rows = []
    for ann in task.get("annotations") or []:
        if GRID_KEYS in data:
            rows.extend(parse_grid_annotation(keys, task["id"], ann, n, users, gold))
        elif keys:
            rows.append(parse_annotation(keys[0], task["id"], ann, n, users, gold))
    return rows


def decide(n_keep: int, n_votes: int, mean_rating: float | None, cfg: PassConfig) -> bool:
    if n_votes == 0:
        return False
    if cfg.rule == "any":
        return n_keep >= 1
    majority = n_keep * 2 > n_votes
    if cfg.min_mean_rating is None:
        return majority
    return majority and mean_rating is not None and mean_rating >= cfg.min_mean_rating


def decisions_table(keys: list[str], rows: list[dict], overlap: dict[str, int],
                    cfg: PassConfig, gold: dict[str, bool]) -> pa.Table:
    votes: dict[str, list[dict]] = {k: [] for k in keys}
    for r in rows:
        if r["keep"] is not None and r["key"] in votes:
            votes[r["key"]].append(r)
    out = {c: [] for c in ("key", "keep", "n_annotations", "n_keep", "keep_fraction",
                           "mean_rating", "required_annotations", "complete", "is_gold", "gold_keep")}
    for key in keys:
        vs = votes[key]
        n_keep = sum(bool(v["keep"]) for v in vs)
        ratings = [v["mean_rating"] for v in vs if v["mean_rating"] is not None]
        mean_rating = float(np.mean(ratings)) if ratings else None
        required = overlap.get(key, 1)
        out["key"].append(key)
        out["keep"].append(decide(n_keep, len(vs), mean_rating, cfg))
        out["n_annotations"].append(len(vs))
        out["n_keep"].append(n_keep)
        out["keep_fraction"].append(n_keep / len(vs) if vs else None)
        out["mean_rating"].append(mean_rating)
        out["required_annotations"].append(required)
        out["complete"].append(len(vs) >= required)
        out["is_gold"].append(key in gold)
        out["gold_keep"].append(gold.get(key))
    return pa.table(out, schema=pa.schema([
        ("key", pa.string()), ("keep", pa.bool_()), ("n_annotations", pa.int32()),
        ("n_keep", pa.int32()), ("keep_fraction", pa.float64()), ("mean_rating", pa.float64()),
        ("required_annotations", pa.int32()), ("complete", pa.bool_()), ("is_gold", pa.bool_()),
        ("gold_keep", pa.bool_())]))


def _with_inputs(decisions: pa.Table, inputs: pa.Table) -> pa.Table:
    """Carry the candidate columns (source, scores, caption) so later stages need no join."""
    index = {k: i for i, k in enumerate(inputs["key"].to_pylist())}
    take = pa.array([index.get(k) for k in decisions["key"].to_pylist()], pa.int64())
    extra = inputs.take(take)
    for name in extra.column_names:
        if name not in decisions.column_names:
            decisions = decisions.append_column(name, extra[name])
    return decisions


def load_gold_file(out_dir: Path) -> dict[str, bool]:
    path = out_dir / "gold.parquet"
    if not path.exists():
        return {}
    t = read_parquet(path)
    return dict(zip(t["key"].to_pylist(), t["gold_keep"].to_pylist()))


def default_overlap(project: dict, cfg: PassConfig, gold: dict[str, bool],
                    keys: dict[str, int]) -> dict[str, int]:
    """Annotations a task needs before any is made: the project's overlap when every task
    overlaps, else 1 (the cohort is only known per task once annotated); gold tasks as pushed."""
    everyone = (project.get("overlap_cohort_percentage") or 0) >= 100
    base = int(project.get("maximum_annotations") or 1) if everyone else 1
    return {k: (max(base, cfg.gold_annotators) if k in gold else base) for k in keys}


def updated_since(since: str) -> dict:
    """Data-manager query: tasks updated after `since` (ISO time, UTC)."""
    value = datetime.fromisoformat(since).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"filters": {"conjunction": "and", "items": [
        {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": value}]}}


def _previous(out_dir: Path, state: dict | None, project_id: int, full: bool) -> pa.Table | None:
    """The last pull's annotation rows, when this pull may build on them."""
    path = out_dir / "annotations.parquet"
    if full or not state or state.get("project_id") != project_id or not path.exists():
        return None
    return read_parquet(path).cast(ANNOTATION_SCHEMA)


def fetch_rows(client: Client, project_id: int, query: dict, n: int, users: dict[int, str],
               gold: dict[str, bool], overlap: dict[str, int]) -> tuple[pa.Table, set[int]]:
    """Annotation rows of the tasks `query` selects, a page at a time; the fetched task ids.
    Each task's overlap (annotations it needs) is recorded per image in `overlap`."""
    parts, fetched = [], set()
    for page in client.task_pages(project_id, fields="all", page_size=PAGE_SIZE, query=query):
        rows = []
        for task in page:
            keys = task_keys(task.get("data") or {})
            if not keys:
                continue
            fetched.add(task["id"])
            for key in keys:
                overlap[key] = task.get("overlap") or 1
            rows.extend(task_rows(task, n, users, gold))
        for row in rows:
            row["simulated"] = is_simulated_annotator(row["annotator"])
        parts.append(pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA))
    empty = ANNOTATION_SCHEMA.empty_table()
    return pa.concat_tables([empty, *parts]), fetched


def _with_gold(table: pa.Table, gold: dict[str, bool]) -> pa.Table:
    """is_gold / gold_keep of every row from the current gold file (kept rows included)."""
    keys = table["key"]
    gold_keys = pa.array(list(gold), pa.string())
    index = pc.index_in(keys, value_set=gold_keys)
    gold_keep = pa.array(list(gold.values()), pa.bool_()).take(index) if gold else pa.nulls(len(table), pa.bool_())
    table = table.set_column(table.schema.get_field_index("is_gold"), "is_gold", pc.is_valid(index))
    return table.set_column(table.schema.get_field_index("gold_keep"), "gold_keep", gold_keep)


def pull(run: Path, ref: str | int, client: Client, config: ReviewConfig, full: bool = False) -> dict:
    """Pull review pass `ref` (name or 1-based number): annotations, decisions, quality, summary.
    Incremental unless `full` (see the module docstring)."""
    t0 = time.monotonic()
    run_dir = RunDir.of(run)
    run = run_dir.root
    cfg = config.pass_config(ref)
    n = pass_number(config, cfg.name)
    tasks_set = taskset(client, run, cfg.name, config)
    project = tasks_set.find()
    if project is None:
        raise PullError(f"no Label Studio project for review {pass_label(cfg.name)} of {run} at "
                        f"{client.url}; run `photogenic review push --run {run} --pass {cfg.name}` first")
    out_dir = run_dir.review(cfg.name)
    gold = load_gold_file(out_dir)
    users = {u["id"]: u["email"] for u in client.users()}
    # Every key from the push ledger (checked against the server); annotations only from the
    # tasks annotated (first pull) or updated since the last pull began.
    all_keys = tasks_set.known_keys()
    state = read_json(out_dir / PULL_STATE)
    previous = _previous(out_dir, state, project["id"], full)
    overlap = default_overlap(project, cfg, gold, all_keys)
    if previous is not None:
        overlap.update(_previous_overlap(run_dir, cfg.name))
    # The next pull starts a margin before this one began: an annotation committed while this
    # one paged is fetched then.
    started = client.server_time() - timedelta(seconds=SINCE_MARGIN_S)
    query = ANNOTATED_QUERY if previous is None else updated_since(state["since"])
    fetched, fetched_ids = fetch_rows(client, project["id"], query, n, users, gold, overlap)
    if previous is not None:
        stale = pc.is_in(previous["task_id"], value_set=pa.array(sorted(fetched_ids), pa.int64()))
        fetched = pa.concat_tables([previous.filter(pc.invert(stale)), fetched])
    annotations = _with_gold(fetched, gold).sort_by([("key", "ascending"), ("annotation_id", "ascending")])
    rows = annotations.to_pylist()
    keys = sorted(all_keys)
    try:
        inputs = pass_input(run, config, cfg.name)
    except PushError:
        inputs = None
    decisions = decisions_table(keys, rows, overlap, cfg, gold)
    if inputs is not None:
        decisions = _with_inputs(decisions, inputs)
    quality = summarise(rows, gold)
    quality.update({"pass": n, "project_id": project["id"],
                    "tasks": len(keys), "kept": int(sum(decisions["keep"].to_pylist())),
                    "rule": cfg.rule, "min_mean_rating": cfg.min_mean_rating,
                    "pull": {"incremental": previous is not None, "tasks_fetched": len(fetched_ids)}})
    clear_success(out_dir)
    write_parquet_atomic(annotations, out_dir / "annotations.parquet")
    failpoint("pull.between_files")
    write_parquet_atomic(decisions, run_dir.decisions(cfg.name))
    write_json_atomic(quality, out_dir / "quality.json")
    write_summary(out_dir, review_summary(config, cfg, decisions, inputs, time.monotonic() - t0))
    write_json_atomic({"project_id": project["id"], "since": started.isoformat()}, out_dir / PULL_STATE)
    mark_success(out_dir)
    quality["head"] = learn_head(run_dir, cfg.name, config)
    return quality


def learn_head(run: RunDir, name: str, config: ReviewConfig) -> dict:
    """The pass's head (annotation/head.py), after its decisions are committed: a head that cannot
    be learnt is reported, never a failed pull."""
    from photogenic.annotation import head

    try:
        meta = head.learn(run, name, config, echo=lambda m: log.info("%s", m))
    except (ValueError, OSError, RuntimeError) as err:
        log.warning("review %s: no head learnt: %s", name, err)
        return {"skipped": f"error: {err}"}
    return {k: meta[k] for k in ("skipped", "held_out", "with_embeddings", "meaningless", "reused") if k in meta}


def _previous_overlap(run_dir: RunDir, name: str) -> dict[str, int]:
    """Annotations each key needs, as the last pull saw its task (tasks not fetched again)."""
    path = run_dir.decisions(name)
    if not path.exists():
        return {}
    t = read_parquet(path, columns=["key", "required_annotations"])
    return dict(zip(t["key"].to_pylist(), t["required_annotations"].to_pylist()))


def review_summary(config: ReviewConfig, cfg: PassConfig, decisions: pa.Table, inputs: pa.Table | None,
                   seconds: float) -> StageSummary:
    """The pass in the one stage-summary shape: in = keys of its input (the tasks when the input
    can no longer be read), out = kept; the rest dropped by the rule or not annotated yet."""
    dec = decisions.select(["key", "keep", "n_annotations"]).to_pylist()
    input_keys = sorted(inputs["key"].to_pylist()) if inputs is not None else [d["key"] for d in dec]
    kept = sum(bool(d["keep"]) for d in dec)
    unannotated = sum(d["n_annotations"] == 0 for d in dec)
    return StageSummary(
        stage="review", input_fingerprint=fingerprint(cfg.input, input_keys),
        rows_in=len(input_keys), rows_out=kept,
        by_reason={"dropped": len(dec) - kept - unannotated, "unannotated": unannotated,
                   "not_pushed": len(set(input_keys) - {d["key"] for d in dec})},
        seconds=round(seconds, 3), config=cfg.model_dump(mode="json"),
        details={"pass": cfg.name, "pass_index": config.pass_index(cfg.name), "input": cfg.input,
                 "rule": cfg.rule, "min_mean_rating": cfg.min_mean_rating},
    )
