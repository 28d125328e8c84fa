"""Push a pass's images to Label Studio: batched, retried, one task per key ever."""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from photogenic.annotation import media
from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.annotation.ledger import Ledger
from photogenic.annotation.lsclient import Client, Unavailable
from photogenic.annotation.projects import ensure_local_storage, ensure_project, pass_dir, run_id
from photogenic.pipeline.core.runio import is_complete, write_json_atomic, write_parquet_atomic

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


def pass_input(run: Path, n: int) -> pa.Table:
    """Pass 1: the candidates. Pass 2: pass 1's keepers (with their candidate columns)."""
    run = Path(run)
    if n == 1:
        cdir = run / "candidates"
        if not is_complete(cdir):
            raise PushError(f"{cdir} is not complete (no _SUCCESS); run `photogenic select` first")
        table = ds.dataset(sorted(cdir.glob("*.parquet")), format="parquet").to_table()
    else:
        p1 = pass_dir(run, 1)
        if not is_complete(p1):
            raise PushError(f"{p1} is not complete; run `photogenic review pull --pass 1` first")
        table = pq.read_table(p1 / "decisions.parquet")
        table = table.filter(pc.equal(table["keep"], True))
    for col in ("key", "source"):
        if col not in table.column_names:
            raise PushError(f"pass {n} input has no '{col}' column")
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
        table = pq.read_table(path)
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


def build_task(row: dict, image_url: str, n: int, score: float | None = None) -> dict:
    data = {"key": row["key"], "image": image_url, "pass": n}
    for name in TASK_FIELDS:
        if name in row:
            data[name] = _clean(row[name])
    if n == 2:
        for name in ("n_keep", "n_annotations"):
            if name in row:
                data[f"pass1_{name}"] = row[name]
    data.setdefault("caption", "")
    task = {"data": data}
    if score is not None:
        # An empty-result prediction carries the model score, so reviewers can sort by it
        # without any answer being pre-filled.
        data["score_percentile"] = score
        task["predictions"] = [{"model_version": "photogenic-score-percentile", "score": score, "result": []}]
    return task


def project_keys(client: Client, project_id: int) -> dict[str, int]:
    """key -> task id for every task already in the project (the server is the ledger)."""
    tasks = client.tasks(project_id, fields="task_only")
    out = {}
    for t in tasks:
        key = (t.get("data") or {}).get("key")
        if key is not None:
            out.setdefault(str(key), t["id"])
    return out


# --- push ------------------------------------------------------------------------------------


def push(run: Path, n: int, client: Client, config: ReviewConfig, gold_file: str | None = None,
         limit: int | None = None, echo: Callable[[str], None] = print,
         progress: Callable[[int, int], None] | None = None) -> PushResult:
    t0 = time.monotonic()
    run = Path(run)
    pass_cfg = config.for_pass(n)
    table = pass_input(run, n)
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pylist()
    keys = {r["key"] for r in rows}
    gold_path = gold_file or pass_cfg.gold_file
    gold = load_gold(gold_path, keys) if gold_path else {}
    out_dir = pass_dir(run, n)
    if gold:
        write_parquet_atomic(pa.table({"key": list(gold), "gold_keep": list(gold.values())}),
                             out_dir / "gold.parquet")

    media_dir = run / "review" / "media"
    names = media.materialise_all([(r["key"], r["source"]) for r in rows], media_dir,
                                  config.media_max_side)
    unreadable = [k for k, v in names.items() if v is None]
    if unreadable:
        echo(f"{len(unreadable)} image(s) could not be read and are not pushed (see push.json)")

    project = ensure_project(client, run, n, pass_cfg)
    pid = project["id"]
    if client.conn.local_files_root is None:
        raise PushError("images are served by Label Studio's local-files storage: set [review] "
                        "local_files_root to a folder that Label Studio serves (same path on its host)")
    rid = run_id(run)
    link = media.link_into_root(media_dir, client.conn.local_files_root, rid)
    ensure_local_storage(client, pid, link)

    ledger = Ledger(out_dir / "ledger", pid)
    existing = known_keys(client, pid, ledger)
    percentiles = score_percentiles(rows)
    todo = [build_task(r, media.image_url(rid, names[r["key"]]), n, percentiles.get(r["key"]))
            for r in rows if names.get(r["key"]) and r["key"] not in existing]
    imported, batches, retries = _import_batches(client, pid, todo, config, ledger, echo, progress)

    final = known_keys(client, pid, ledger)
    if gold:
        _gold_overlap(client, [final[k] for k in gold if k in final], pass_cfg.gold_annotators)
    write_parquet_atomic(pa.table({"key": pa.array(list(final), pa.string()),
                                   "task_id": pa.array(list(final.values()), pa.int64())}),
                         out_dir / "tasks.parquet")
    result = PushResult(project_id=pid, n_input=len(rows), n_imported=imported,
                        n_in_project=len(final), n_unreadable=len(unreadable), n_gold=len(gold),
                        batches=batches, retries=retries, seconds=time.monotonic() - t0,
                        unreadable=unreadable)
    write_json_atomic(result.as_dict(), out_dir / "push.json")
    return result


def known_keys(client: Client, pid: int, ledger: Ledger) -> dict[str, int]:
    """key -> task id of the project: the local ledger when it is in step with the server (same
    task count, no batch in flight), else read back from the server (and the ledger rebuilt)."""
    local = ledger.read()
    if local is not None and client.project(pid).get("task_number") == len(local):
        return local
    mapping = project_keys(client, pid)
    ledger.rebuild(mapping)
    return mapping


def _import_batches(client: Client, pid: int, todo: list[dict], config: ReviewConfig, ledger: Ledger,
                    echo: Callable[[str], None], progress) -> tuple[int, int, int]:
    """Import in batches. A failed import may still have landed (the server died after commit),
    so before resending, the batch is re-checked against the project's keys."""
    size = config.import_batch_size
    imported = batches = retries = 0
    for start in range(0, len(todo), size):
        batch = todo[start:start + size]
        attempt = 0
        while batch:
            keys = [t["data"]["key"] for t in batch]
            ledger.begin(keys)
            try:
                resp = client.request("POST", f"/api/projects/{pid}/import", retry=False,
                                      params={"return_task_ids": "true"}, json=batch)
            except Unavailable as err:
                attempt += 1
                retries += 1
                if attempt > config.max_retries:
                    raise Unavailable(f"{err}; push stopped after {imported} new task(s), "
                                      "rerun the same command to resume (no duplicates)") from None
                delay = min(config.backoff_max_s, config.backoff_s * 2 ** (attempt - 1))
                echo(f"import batch failed ({err}); retrying in {delay:.1f}s")
                time.sleep(delay * (0.5 + random.random() / 2))
                landed = known_keys(client, pid, ledger)  # pending marker: read from the server
                before = len(batch)
                batch = [t for t in batch if t["data"]["key"] not in landed]
                imported += before - len(batch)
                continue
            ids = (resp or {}).get("task_ids") or []
            if len(ids) == len(keys):
                ledger.commit(keys, ids)
            else:  # no ids back (older servers): leave the marker, the next read lists the server
                echo("import returned no task ids; the ledger will be rebuilt from the server")
            imported += len(batch)
            batches += 1
            break
        if progress:
            progress(min(start + size, len(todo)), len(todo))
    return imported, batches, retries


def _gold_overlap(client: Client, task_ids: list[int], annotators: int) -> None:
    """Gold tasks go to every annotator of the pass, so each one's accuracy can be measured."""
    for tid in task_ids:
        client.patch(f"/api/tasks/{tid}/", json={"overlap": max(annotators, 1)})
