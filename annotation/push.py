"""Push a pass's images to Label Studio: batched, retried, one task per key ever."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from photogenic.annotation import media, objectstore
from photogenic.annotation.lsclient import Client
from photogenic.annotation.projects import ensure_project, is_grid, run_id, taskset
from photogenic.annotation.tasksets import GRID_KEYS
from photogenic.pipeline.core.config.review import CANDIDATES, ReviewConfig, pass_number
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import (committed_parquet, is_complete, read_parquet, write_json_atomic,
                                            write_parquet_atomic)
from photogenic.pipeline.core.storage import is_remote

log = logging.getLogger(__name__)

# Score columns that travel with each task so reviewers can sort and filter by them.
TASK_FIELDS = ("caption", "clip_score", "aesthetic_score", "engagement", "concept", "likes",
               "views", "width", "height")


class PushError(RuntimeError):
    pass


@dataclass
class PushResult:
    project_id: int
    n_input: int
    n_imported: int
    n_in_project: int
    n_tasks: int  # tasks in the project (a grid task holds several images)
    n_tasks_imported: int
    n_unreadable: int
    n_gold: int
    batches: int
    retries: int
    seconds: float
    unreadable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["unreadable"] = d["unreadable"][:100]
        return d


# --- inputs ----------------------------------------------------------------------------------


def pass_input(run: Path, config: ReviewConfig, ref: str | int) -> pa.Table:
    """The pass's images: the candidates, or the keeps of its input pass (with their columns)."""
    run = RunDir.of(run)
    p = config.pass_config(ref)
    if p.input == CANDIDATES:
        if not is_complete(run.candidates):
            raise PushError(f"{run.candidates} is not complete (no _SUCCESS); run `photogenic select` first")
        parts = [p for p in committed_parquet(run.candidates) if p.parent == run.candidates]
        table = pa.concat_tables([read_parquet(p) for p in parts], promote_options="default")
    else:
        if not is_complete(run.review(p.input)):
            raise PushError(f"{run.review(p.input)} is not complete; run "
                            f"`photogenic review pull --pass {p.input}` first")
        table = read_parquet(run.decisions(p.input))
        table = table.filter(pc.equal(table["keep"], True))
    for col in ("key", "source"):
        if col not in table.column_names:
            raise PushError(f"review pass '{p.name}' input has no '{col}' column")
    return _unique_keys(table)


def _unique_keys(table: pa.Table) -> pa.Table:
    keys = table["key"].to_pylist()
    seen, keep = set(), []
    for i, k in enumerate(keys):
        if k is not None and k not in seen:
            seen.add(k)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64())) if len(keep) != len(keys) else table


def load_gold(path: str | Path, input_keys: set[str]) -> dict[str, bool]:
    """Known answers (key -> keep) from a csv or parquet file with columns key, keep."""
    path = Path(path)
    if not path.exists():
        raise PushError(f"gold file not found: {path}")
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={"key": pa.string(), "keep": pa.bool_()}))
    else:
        table = read_parquet(path)
    missing = {"key", "keep"} - set(table.column_names)
    if missing:
        raise PushError(f"gold file {path} lacks column(s) {sorted(missing)}")
    gold = dict(zip(table["key"].to_pylist(), table["keep"].to_pylist()))
    unknown = [k for k in gold if k not in input_keys]
    if unknown:
        raise PushError(f"gold file {path}: {len(unknown)} key(s) are not in this pass's input, "
                        f"e.g. {unknown[:3]}; gold tasks must be images of the pass")
    return {str(k): bool(v) for k, v in gold.items()}


# --- tasks -----------------------------------------------------------------------------------


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def score_percentiles(rows: list[dict]) -> dict[str, float]:
    """key -> percentile (0-1) of the first model score present in the pass (aesthetic, CLIP,
    engagement). Label Studio wants prediction scores in [0, 1]; a percentile sorts the same."""
    for name in ("aesthetic_score", "clip_score", "engagement"):
        values = [(r["key"], _clean(r.get(name))) for r in rows]
        values = [(k, v) for k, v in values if v is not None]
        if values:
            values.sort(key=lambda kv: kv[1])
            denom = max(len(values) - 1, 1)
            return {k: round(i / denom, 6) for i, (k, _) in enumerate(values)}
    return {}


def task_order(run: RunDir, p, config: ReviewConfig, rows: list[dict]) -> tuple[list[dict], dict[str, float], str]:
    """(rows in import order, key -> score percentile, what ordered them). A pass reviewing an
    earlier pass's keeps goes best-first by the head learnt from that pass (annotation/head.py),
    so its sequential queue serves the likeliest keeps first; else input order, with the first
    model score's percentile for reviewers to sort by."""
    from photogenic.annotation import head

    source = head.head_path(run, p.input) if p.input != CANDIDATES else None
    if not (config.head.order_next_pass and source is not None and source.exists() and run.embeddings.exists()):
        return rows, score_percentiles(rows), "input"
    scores = head.head_scores(source, run, [r["key"] for r in rows])
    if not scores:
        return rows, score_percentiles(rows), "input"
    rows = sorted(rows, key=lambda r: -scores.get(r["key"], -np.inf))  # stable: unscored keep input order
    ranked = sorted(scores, key=scores.get)
    denom = max(len(ranked) - 1, 1)
    percentiles = {k: round(i / denom, 6) for i, k in enumerate(ranked)}
    return rows, percentiles, f"head of {p.input}"


def build_task(row: dict, image_url: str, n: int, score: float | None = None,
               input_pass: str = CANDIDATES) -> dict:
    """One task of pass number `n`; the votes of the input pass travel as INPUT_n_keep, ..."""
    data = {"key": row["key"], "image": image_url, "pass": n}
    for name in TASK_FIELDS:
        if name in row:
            data[name] = _clean(row[name])
    if input_pass != CANDIDATES:
        for name in ("n_keep", "n_annotations"):
            if name in row:
                data[f"{input_pass}_{name}"] = row[name]
    data.setdefault("caption", "")
    task = {"data": data}
    if score is not None:
        # An empty-result prediction carries the model score, so reviewers can sort by it
        # without any answer being pre-filled.
        data["score_percentile"] = score
        task["predictions"] = [{"model_version": "photogenic-score-percentile", "score": score, "result": []}]
    return task


def grids(rows: list[dict], size: int, gold: dict[str, bool]) -> list[list[dict]]:
    """The rows in grids of `size`, in input order; gold images share their own grids, so only
    those tasks go to every annotator."""
    gold_rows = [r for r in rows if r["key"] in gold]
    rest = [r for r in rows if r["key"] not in gold]
    return [part[i:i + size] for part in (gold_rows, rest) for i in range(0, len(part), size)]


def grid_id(keys: list[str]) -> str:
    """A grid task's own key: the same images always make the same id."""
    return "grid-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:20]


def build_grid_task(rows: list[dict], urls: list[str], n: int, scores: list[float | None]) -> dict:
    """One grid task: its images in slot order (images[i] is shown as image_i with toggle keep_i),
    each with its scores; the mean score percentile sorts the grids."""
    keys = [r["key"] for r in rows]
    images = [{"key": r["key"], "url": url, **{f: _clean(r[f]) for f in TASK_FIELDS if f in r}}
              for r, url in zip(rows, urls)]
    data = {"key": grid_id(keys), GRID_KEYS: keys, "images": images, "pass": n, "grid_size": len(keys)}
    task = {"data": data}
    known = [s for s in scores if s is not None]
    if known:
        score = round(sum(known) / len(known), 6)
        data["score_percentile"] = score
        task["predictions"] = [{"model_version": "photogenic-score-percentile", "score": score, "result": []}]
    return task


# --- push ------------------------------------------------------------------------------------


def push(run: Path, ref: str | int, client: Client, config: ReviewConfig, gold_file: str | None = None,
         limit: int | None = None, echo: Callable[[str], None] = print,
         progress: Callable[[int, int], None] | None = None) -> PushResult:
    """Push review pass `ref` (name or 1-based number) of `run`; idempotent."""
    t0 = time.monotonic()
    run_dir = RunDir.of(run)
    run = run_dir.root
    p = config.pass_config(ref)
    table = pass_input(run, config, p.name)
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pylist()
    keys = {r["key"] for r in rows}
    gold_path = gold_file or p.gold_file
    gold = load_gold(gold_path, keys) if gold_path else {}
    out_dir = run_dir.review(p.name)
    if gold:
        write_parquet_atomic(pa.table({"key": list(gold), "gold_keep": list(gold.values())}),
                             out_dir / "gold.parquet")

    names = media.materialise_all([(r["key"], r["source"]) for r in rows], run_dir.media,
                                  config.media_max_side)
    unreadable = [k for k, v in names.items() if v is None]
    if unreadable:
        echo(f"{len(unreadable)} image(s) could not be read and are not pushed (see push.json)")

    tasks = taskset(client, run, p.name, config)
    project = ensure_project(tasks, run, p)
    pid = project["id"]
    url_of = serve_media(tasks, run_dir, client, config, n_images=len(names) - len(unreadable))

    existing = tasks.known_keys()
    rows, percentiles, ordered_by = task_order(run_dir, p, config, rows)
    if ordered_by != "input":
        echo(f"{p.name}: tasks go in best-first by the head learnt from {p.input} ({ordered_by})")
    n = pass_number(config, p.name)
    new = [r for r in rows if names.get(r["key"]) and r["key"] not in existing]
    if is_grid(p):
        todo = [build_grid_task(g, [url_of(names[r["key"]]) for r in g], n,
                                [percentiles.get(r["key"]) for r in g])
                for g in grids(new, p.grid_size, gold)]
    else:
        todo = [build_task(r, url_of(names[r["key"]]), n, percentiles.get(r["key"]), p.input) for r in new]
    imported = tasks.import_tasks(todo, echo, progress)

    final = tasks.known_keys()
    if gold:
        _gold_overlap(client, sorted({final[k] for k in gold if k in final}), p.gold_annotators)
    write_parquet_atomic(pa.table({"key": pa.array(list(final), pa.string()),
                                   "task_id": pa.array(list(final.values()), pa.int64())}),
                         out_dir / "tasks.parquet")
    result = PushResult(project_id=pid, n_input=len(rows), n_imported=len(final.keys() - existing.keys()),
                        n_in_project=len(final), n_tasks=len(set(final.values())),
                        n_tasks_imported=imported.imported, n_unreadable=len(unreadable), n_gold=len(gold),
                        batches=imported.batches, retries=imported.retries,
                        seconds=time.monotonic() - t0, unreadable=unreadable)
    write_json_atomic({**result.as_dict(), "ordered_by": ordered_by}, out_dir / "push.json")
    return result


def serve_media(tasks, run_dir: RunDir, client: Client, config: ReviewConfig,
                 n_images: int) -> Callable[[str], str]:
    """Give the project a storage that serves the run's media; returns name -> task image URL.
    Local runs: local-files storage through a link from Label Studio's document root. Runs on S3:
    an S3 import storage over the run's media prefix, with presigned URLs."""
    if is_remote(run_dir.media):
        if not objectstore.is_s3(run_dir.media):
            raise PushError(f"review images of a run at {run_dir.root} cannot be served: Label Studio "
                            "storages are supported for local runs and runs on S3 (s3://) only")
        if n_images:  # Label Studio checks the prefix holds an object before it adds the storage
            tasks.ensure_s3_storage(objectstore.storage_body(tasks.project_id, run_dir.media, config))
        return lambda name: objectstore.image_url(run_dir.media, name)
    if client.conn.local_files_root is None:
        raise PushError("images are served by Label Studio's local-files storage: set [review] "
                        "local_files_root to a folder that Label Studio serves (same path on its host)")
    rid = run_id(run_dir.root)
    tasks.ensure_local_storage(media.link_into_root(run_dir.media, client.conn.local_files_root, rid))
    return lambda name: media.image_url(rid, name)


def _gold_overlap(client: Client, task_ids: list[int], annotators: int) -> None:
    """Gold tasks go to every annotator of the pass, so each one's accuracy can be measured."""
    for tid in task_ids:
        client.patch(f"/api/tasks/{tid}/", json={"overlap": max(annotators, 1)})
