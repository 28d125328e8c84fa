"""Pull a pass's annotations (all of them, every time: a pull never loses or double-counts one)
and turn them into one decision per key by the pass's rule."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from photogenic.annotation.lsclient import Client
from photogenic.annotation.projects import RATINGS, taskset
from photogenic.annotation.push import PushError, pass_input
from photogenic.annotation.quality import summarise
from photogenic.annotation.simulate import is_simulated_annotator
from photogenic.pipeline.core.config.review import PassConfig, ReviewConfig, pass_label, pass_number
from photogenic.pipeline.core.faults import failpoint
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import (clear_success, mark_success, read_parquet, write_json_atomic,
                                            write_parquet_atomic)
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


def pull(run: Path, ref: str | int, client: Client, config: ReviewConfig) -> dict:
    """Pull review pass `ref` (name or 1-based number): annotations, decisions, quality, summary."""
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
    # Every key from the push ledger (checked against the server), annotations only from the
    # annotated tasks: listing a task costs Label Studio milliseconds, so unannotated ones are
    # not fetched. Unlike the export endpoint this leaves no export file on the server per pull.
    all_keys = tasks_set.known_keys()
    tasks = client.annotated_tasks(project["id"])
    overlap = default_overlap(project, cfg, gold, all_keys)
    rows = []
    for task in tasks:
        key = (task.get("data") or {}).get("key")
        if key is None:
            continue
        overlap[str(key)] = task.get("overlap") or 1
        for ann in task.get("annotations") or []:
            rows.append(parse_annotation(str(key), task["id"], ann, n, users, gold))
    for row in rows:
        row["simulated"] = is_simulated_annotator(row["annotator"])
    rows.sort(key=lambda r: (r["key"], r["annotation_id"]))
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
                    "rule": cfg.rule, "min_mean_rating": cfg.min_mean_rating})
    clear_success(out_dir)
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA), out_dir / "annotations.parquet")
    failpoint("pull.between_files")
    write_parquet_atomic(decisions, run_dir.decisions(cfg.name))
    write_json_atomic(quality, out_dir / "quality.json")
    write_summary(out_dir, review_summary(config, cfg, decisions, inputs, time.monotonic() - t0))
    mark_success(out_dir)
    return quality


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
