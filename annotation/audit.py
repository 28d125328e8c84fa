"""The reject audit (`photogenic review audit push|simulate|pull`): does a filter throw away images
people would keep?

A seeded random sample of each reject reason, and of passed rows as a control, goes to one small
Label Studio project that asks "should this image have been kept?" without saying why a filter
rejected it (the control rows are mixed in, so the question is asked blind). `pull` turns the
answers into, per reason, the share of rejects that should have been kept (the filter's
false-reject rate) with a Wilson interval (scipy), and per threshold of every filter a curve:
for thresholds over the pool's range of the raw score, the share of scored rows it rejects and
the estimated false-reject rate among them. The estimate is stratified: an audited image stands
for population/audited rows of its stratum (its reject reason, or "passed"). A threshold is
suggested where the estimated false-reject rate stays under `[review.audit] target_false_reject`
while rejecting the most; suggestions are written as a config snippet (thresholds.toml).

Curves use the raw scores the filter job stored. A row rejected by a cheaper filter has no score
from the filters after it (the cascade stops early) unless the job ran with `--score-all`; such
rows are left out of that filter's curves, and audit.json says how many audited rows had a score.

    RUN/review/audit/sample.parquet    the drawn images: key, stratum, population, source, ...
    RUN/review/audit/tasks.parquet     key -> Label Studio task id
    RUN/review/audit/answers.parquet   one row per answer (simulated ones flagged)
    RUN/review/audit/audit.json        estimates, curves, suggestions
    RUN/review/audit/thresholds.toml   suggested [filters.NAME] thresholds
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from photogenic.annotation import media
from photogenic.annotation.lsclient import Client
from photogenic.annotation.projects import run_id
from photogenic.annotation.push import serve_media
from photogenic.annotation.simulate import SimulationError, is_simulated_annotator, sign_up, simulated_email, work_queues
from photogenic.annotation.tasksets import ImportPolicy, TaskSet
from photogenic.annotation.users import AnnotatorStore
from photogenic.pipeline.core.config import Config
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import (committed_parquet, is_complete, mark_success, read_json, read_parquet,
                                            sql_quote, write_file_atomic, write_json_atomic, write_parquet_atomic)
from photogenic.pipeline.core.storage import duckdb_location, location, register_filesystems

log = logging.getLogger(__name__)

PASSED = "passed"  # the control stratum
GROUP = "auditor"  # simulated annotators: sim-auditor-N@photogenic.local
CURVE_POINTS = 41  # thresholds per curve: quantiles of the raw score over the pool
MEAN_SECONDS = 4.0

SAMPLE_SCHEMA = pa.schema([("key", pa.string()), ("stratum", pa.string()), ("population", pa.int64()),
                           ("draw", pa.int64()), ("source", pa.string()), ("caption", pa.string()),
                           ("reject_detail", pa.string())])
ANSWER_SCHEMA = pa.schema([("key", pa.string()), ("stratum", pa.string()), ("task_id", pa.int64()),
                           ("annotation_id", pa.int64()), ("annotator", pa.string()), ("keep", pa.bool_()),
                           ("lead_time", pa.float64()), ("simulated", pa.bool_())])


class AuditError(RuntimeError):
    pass


def audit_dir(run) -> Path:
    return RunDir.of(run).review_root / "audit"


def marker(rid: str) -> str:
    return f"[photogenic run={rid} audit]"


def taskset(client: Client, run, config: Config) -> TaskSet:
    return TaskSet(client, marker(run_id(RunDir.of(run).root)), key_field="key",
                   policy=ImportPolicy.from_config(config.review))


def _scores_sql(run: RunDir, con) -> str:
    if not is_complete(run.scores):
        raise AuditError(f"{run.scores} is not complete (no _SUCCESS): run `photogenic filter` first")
    files = committed_parquet(run.scores)
    if not files:
        raise AuditError(f"{run.scores} holds no parquet files")
    register_filesystems(con, files)
    listed = ", ".join(sql_quote(duckdb_location(f)) for f in files)
    return f"read_parquet([{listed}], union_by_name = true)"


def _connect():
    import duckdb

    return duckdb.connect()


# --- the sample -----------------------------------------------------------------------------------


def draw_sample(run, config: Config) -> pa.Table:
    """Per reject reason `per_reason` rows, and `control` passed rows, drawn by a seeded hash of
    the key (the same scores and seed always draw the same images; a grown pool keeps most)."""
    run = RunDir.of(run)
    cfg = config.review.audit
    con = _connect()
    scores = _scores_sql(run, con)
    skip = ", ".join(sql_quote(r) for r in cfg.skip_reasons) or "''"
    stratum = f"CASE WHEN passed THEN '{PASSED}' ELSE coalesce(nullif(reject_reason, ''), 'unknown') END"
    table = con.sql(f"""
        WITH s AS (SELECT key, {stratum} AS stratum, source, caption, reject_detail
                   FROM {scores} WHERE key IS NOT NULL),
        kept AS (SELECT * FROM s WHERE stratum NOT IN ({skip})),
        drawn AS (SELECT *, count(*) OVER (PARTITION BY stratum) AS population,
                         row_number() OVER (PARTITION BY stratum ORDER BY md5(concat(?, ':audit:', key)), key) AS draw
                  FROM kept)
        SELECT key, stratum, population, draw, source, caption, reject_detail FROM drawn
        WHERE draw <= CASE WHEN stratum = '{PASSED}' THEN ? ELSE ? END
        ORDER BY md5(concat(?, ':order:', key)), key""", params=[str(cfg.seed), cfg.control, cfg.per_reason,
                                                                 str(cfg.seed)]).to_arrow_table()
    return _conform(table, SAMPLE_SCHEMA)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.table({f.name: table.column(f.name).cast(f.type) for f in schema}, schema=schema)


def label_config() -> str:
    return resources.files("photogenic.annotation").joinpath("configs/audit.xml").read_text()


def ensure_project(tasks: TaskSet, run: RunDir, config: Config) -> dict:
    rid = run_id(run.root)
    name = location(run.root).rstrip("/").rsplit("/", 1)[-1]
    return tasks.ensure({
        "title": f"Photogenic reject audit {name[:20]} {rid[:6]}"[:50],
        "description": f"Photogenic reject audit of {location(run.root)} {marker(rid)}",
        "show_instruction": True, "show_skip_button": True, "enable_empty_annotation": False,
        "sampling": "Sequential sampling",  # tasks are imported in a seeded random order
    }, {"label_config": label_config(), "maximum_annotations": config.review.audit.annotators,
        "overlap_cohort_percentage": 100})


def push(run, client: Client, config: Config, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Draw the sample and import it (idempotent: one task per key, ever)."""
    t0 = time.monotonic()
    run = RunDir.of(run)
    sample = draw_sample(run, config)
    out = audit_dir(run)
    rows = sample.to_pylist()
    names = media.materialise_all([(r["key"], r["source"]) for r in rows], run.media, config.review.media_max_side)
    unreadable = sorted(k for k, v in names.items() if v is None)
    if unreadable:
        echo(f"{len(unreadable)} audit image(s) could not be read and are not pushed")
    tasks = taskset(client, run, config)
    project = ensure_project(tasks, run, config)
    url_of = serve_media(tasks, run, client, config.review, n_images=len(names) - len(unreadable))
    existing = tasks.known_keys()
    todo = [{"data": {"key": r["key"], "image": url_of(names[r["key"]]), "caption": r["caption"] or ""}}
            for r in rows if names.get(r["key"]) and r["key"] not in existing]
    imported = tasks.import_tasks(todo, echo)
    final = tasks.known_keys()
    write_parquet_atomic(sample, out / "sample.parquet")
    write_parquet_atomic(pa.table({"key": pa.array(list(final), pa.string()),
                                   "task_id": pa.array(list(final.values()), pa.int64())}), out / "tasks.parquet")
    strata = dict(Counter(r["stratum"] for r in rows))
    result = {"project_id": project["id"], "sampled": len(rows), "strata": strata, "imported": imported.imported,
              "in_project": len(final), "unreadable": unreadable[:100], "seconds": round(time.monotonic() - t0, 2),
              "url": f"{client.url}/projects/{project['id']}/data"}
    write_json_atomic(result, out / "push.json")
    return result


# --- SIMULATION -----------------------------------------------------------------------------------


def truth_labels(path: str | Path) -> dict[str, bool]:
    """key -> should be kept, from a sample pool's ground_truth.json (no expected reject reason)."""
    truth = read_json(path)
    if not isinstance(truth, dict) or not isinstance(truth.get("samples"), dict):
        raise SimulationError(f"{path} is not a sample pool's ground_truth.json (no 'samples')")
    return {str(k): not (v.get("expected_reason") or "") for k, v in truth["samples"].items()}


def simulate(run, client: Client, config: Config, truth: str | Path, error_rate: float = 0.0, seed: int = 0,
             store: AnnotatorStore | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """SIMULATION: seeded annotators answer the audit from the sample pool's ground truth (an
    image should have been kept when the pool planted no defect in it), each answer flipped with
    probability `error_rate`, through Label Studio's task queue."""
    from photogenic.annotation.server import data_dir

    run = RunDir.of(run)
    labels = truth_labels(truth)
    project = taskset(client, run, config).find()
    if project is None:
        raise SimulationError(f"no reject-audit project for {run.root}; run `photogenic review audit push` first")
    k = config.review.audit.annotators
    emails = [simulated_email(GROUP, i) for i in range(k)]
    accounts = sign_up(client, emails, store or AnnotatorStore(data_dir(config.review) / "annotators.json"))
    echo(f"SIMULATION: {k} simulated auditor(s) (seed {seed}) answer the reject audit from {truth} "
         f"(error rate {error_rate}); these are not human judgements")

    def answer(i: int, task: dict) -> dict:
        key = str(task["data"]["key"])
        if key not in labels:
            raise SimulationError(f"audit image {key} is not in {truth}: simulate only on the sample pool")
        rng = np.random.default_rng([seed, 9001, i, zlib.crc32(key.encode())])
        keep = labels[key] != (rng.random() < error_rate)
        return {"keep": keep, "lead_time": round(float(rng.lognormal(math.log(MEAN_SECONDS), 0.4)), 2),
                "result": [{"from_name": "decision", "to_name": "image", "type": "choices",
                            "value": {"choices": ["keep" if keep else "drop"]}}]}

    t0 = time.monotonic()
    work = work_queues(client, accounts, project["id"], answer)
    answers = [a["keep"] for done in work for a in done]
    summary = {"simulated": True, "note": "SIMULATION: answers come from the sample pool's ground truth, "
               "not from people", "truth": str(truth), "error_rate": error_rate, "seed": seed,
               "annotations_submitted": len(answers), "keep_answers": int(sum(answers)),
               "seconds": round(time.monotonic() - t0, 2)}
    write_json_atomic(summary, audit_dir(run) / "simulation.json")
    echo(f"SIMULATION: submitted {len(answers)} audit answer(s) ({summary['keep_answers']} keep)")
    return summary


# --- pull: estimates, curves, suggestions ---------------------------------------------------------


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def wilson_weighted(p: float, n_eff: float, confidence: float) -> tuple[float, float]:
    """Wilson's interval for a weighted share `p` over Kish's effective sample size `n_eff`
    (binomtest wants whole counts; this is its formula)."""
    from scipy.stats import norm

    if n_eff <= 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / (1 + z * z / n_eff)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Threshold:
    """One threshold of a filter: `[filters.FILTER] FIELD`, over the SQL expression `expr` of the
    scores; a `min_` threshold rejects rows below it, any other rows above it."""

    filter: str
    field: str
    expr: str
    value: float

    @property
    def rejects_below(self) -> bool:
        return self.field.startswith("min")

    def violates(self, values: np.ndarray, t: float) -> np.ndarray:
        return (values < t) if self.rejects_below else (values > t)

    def violates_sql(self, t: float) -> str:
        return f"({self.expr}) {'<' if self.rejects_below else '>'} {float(t)!r}"


def thresholds(config: Config) -> list[Threshold]:
    """Every numeric threshold the enabled filters declare (their report histograms' lines)."""
    out = []
    for cls in config.registry:
        section = getattr(config.filters, cls.name, None)
        if section is None or not getattr(section, "enabled", True) or not cls.reject_reason:
            continue
        for hist in cls.histograms:
            for _, field in hist.thresholds:
                value = getattr(section, field, None)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.append(Threshold(cls.name, field, hist.expr, float(value)))
    return out


def key_decisions(answers: list[dict]) -> dict[str, bool]:
    """key -> kept, by majority of its answers (a tie keeps: the audit asks for false rejects)."""
    votes: dict[str, list[bool]] = {}
    for a in answers:
        votes.setdefault(a["key"], []).append(bool(a["keep"]))
    return {k: 2 * sum(v) >= len(v) for k, v in votes.items()}


def strata_estimates(sample: list[dict], decided: dict[str, bool], confidence: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in sample:
        s = out.setdefault(row["stratum"], {"population": int(row["population"]), "sampled": 0, "answered": 0,
                                            "should_keep": 0})
        s["sampled"] += 1
        if row["key"] in decided:
            s["answered"] += 1
            s["should_keep"] += int(decided[row["key"]])
    for name, s in out.items():
        n, k = s["answered"], s["should_keep"]
        s["rate"] = k / n if n else None
        s["ci"] = list(wilson(k, n, confidence))
        s["estimated_rows"] = round(s["rate"] * s["population"], 1) if n else None
        s["measure"] = "keep rate of passed images (control)" if name == PASSED else "false-reject rate"
    return out


def curve(th: Threshold, grid: list[float], pool_rejects: list[float], audited: list[dict],
          weights: dict[str, float], confidence: float) -> list[dict]:
    """Per candidate threshold: share of scored rows rejected, the audited rows on the reject side
    and the weighted share of them that should have been kept, with its interval."""
    values = np.array([r["value"] for r in audited], float)
    keep = np.array([r["keep"] for r in audited], bool)
    w = np.array([weights[r["stratum"]] for r in audited], float)
    points = []
    for t, share in zip(grid, pool_rejects):
        side = th.violates(values, t) if len(values) else np.zeros(0, bool)
        mass = float(w[side].sum())
        frr = float((w[side] * keep[side]).sum() / mass) if mass else None
        n_eff = mass * mass / float((w[side] ** 2).sum()) if mass else 0.0
        points.append({"threshold": t, "reject_share": share, "support": int(side.sum()),
                       "false_reject_rate": frr,
                       "ci": list(wilson_weighted(frr, n_eff, confidence)) if frr is not None else None})
    return points


def suggest(th: Threshold, points: list[dict], target: float, min_support: int) -> dict[str, Any] | None:
    """The threshold that rejects the most while its estimated false-reject rate is <= target.
    Loosening a threshold only ever rejects less, so its point estimate suffices; a threshold
    stricter than the configured one must have the whole interval under the target."""
    current = next((p["reject_share"] for p in points if p["threshold"] == th.value), 0.0)
    ok = [p for p in points if p["support"] >= min_support and p["false_reject_rate"] is not None
          and p["false_reject_rate"] <= target and (p["reject_share"] <= current or p["ci"][1] <= target)]
    if not ok:
        return None
    best = max(ok, key=lambda p: (p["reject_share"], p["threshold"] if th.rejects_below else -p["threshold"]))
    return dict(best)


def _threshold_grid(con, scores: str, th: Threshold) -> tuple[list[float], list[float], int]:
    qs = [i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)]
    row = con.execute(f"SELECT quantile_cont(CAST(({th.expr}) AS DOUBLE), {qs!r}), count(({th.expr})) "
                      f"FROM {scores} WHERE ({th.expr}) IS NOT NULL").fetchone()
    if not row or not row[1]:
        return [], [], 0
    grid = sorted({round(float(v), 6) for v in row[0]} | {th.value})
    counts = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {th.violates_sql(t)})" for t in grid)
                         + f" FROM {scores} WHERE ({th.expr}) IS NOT NULL").fetchone()
    return grid, [c / row[1] for c in counts], int(row[1])


def read_answers(client: Client, project_id: int, strata: dict[str, str]) -> list[dict]:
    users = {u["id"]: u.get("email") or u.get("username") for u in client.users()}
    answers = []
    for task in client.tasks(project_id, fields="all", page_size=1000):
        key = str((task.get("data") or {}).get("key"))
        if key not in strata:
            continue  # drawn by an earlier sample (the scores changed): not part of this audit
        for ann in task.get("annotations") or []:
            choice = next(((it.get("value") or {}).get("choices") or [None] for it in ann.get("result") or []
                           if it.get("from_name") == "decision"), [None])[0]
            if ann.get("was_cancelled") or choice not in ("keep", "drop"):
                continue
            uid = ann.get("completed_by")
            uid = uid.get("id") if isinstance(uid, dict) else uid
            who = users.get(uid, f"user-{uid}")
            answers.append({"key": key, "stratum": strata[key], "task_id": task["id"], "annotation_id": ann["id"],
                            "annotator": who, "keep": choice == "keep", "lead_time": ann.get("lead_time"),
                            "simulated": is_simulated_annotator(who)})
    answers.sort(key=lambda a: (a["key"], a["annotation_id"]))
    return answers


def pull(run, client: Client, config: Config) -> dict[str, Any]:
    """Answers so far -> answers.parquet, audit.json (estimates, curves, suggestions), thresholds.toml."""
    run = RunDir.of(run)
    out = audit_dir(run)
    sample_path = out / "sample.parquet"
    if not sample_path.exists():
        raise AuditError(f"{sample_path} not found: run `photogenic review audit push --run {run.root}` first")
    project = taskset(client, run, config).find()
    if project is None:
        raise AuditError(f"no reject-audit project for {run.root} at {client.url}; push it first")
    sample = read_parquet(sample_path).to_pylist()
    answers = read_answers(client, project["id"], {r["key"]: r["stratum"] for r in sample})
    write_parquet_atomic(pa.Table.from_pylist(answers, schema=ANSWER_SCHEMA), out / "answers.parquet")
    return analyse(run, config, sample, answers, project_id=project["id"])


def analyse(run, config: Config, sample: list[dict], answers: list[dict], project_id: int | None = None
            ) -> dict[str, Any]:
    run = RunDir.of(run)
    cfg = config.review.audit
    decided = key_decisions(answers)
    strata = strata_estimates(sample, decided, cfg.confidence)
    weights = {s: (v["population"] / v["answered"]) if v["answered"] else 0.0 for s, v in strata.items()}
    stratum_of = {r["key"]: r["stratum"] for r in sample}
    con = _connect()
    scores = _scores_sql(run, con)
    con.execute(f"CREATE TEMP TABLE audited AS SELECT * FROM {scores} WHERE key IN "
                "(SELECT unnest(?::VARCHAR[]))", [sorted(decided)])
    curves = []
    for th in thresholds(config):
        grid, shares, scored = _threshold_grid(con, scores, th)
        rows = con.execute(f"SELECT key, CAST(({th.expr}) AS DOUBLE) FROM audited WHERE ({th.expr}) IS NOT NULL").fetchall()
        audited = [{"key": k, "value": v, "keep": decided[k], "stratum": stratum_of[k]} for k, v in rows]
        points = curve(th, grid, shares, audited, weights, cfg.confidence)
        now = next((p for p in points if p["threshold"] == th.value), None)
        curves.append({"filter": th.filter, "field": th.field, "expr": th.expr, "current": th.value,
                       "direction": "reject below" if th.rejects_below else "reject above",
                       "rows_scored": scored, "audited_with_score": len(audited), "current_point": now,
                       "points": points, "suggested": suggest(th, points, cfg.target_false_reject, cfg.min_support)})
    simulated = sum(a["simulated"] for a in answers)
    result = {
        "project_id": project_id, "answers": len(answers), "images_answered": len(decided),
        "images_sampled": len(sample), "simulated": simulated > 0, "simulated_answers": simulated,
        "confidence": cfg.confidence, "target_false_reject": cfg.target_false_reject, "strata": strata,
        "curves": curves, "notes": [],
    }
    if simulated:
        result["notes"].append(f"SIMULATION: {simulated} of {len(answers)} answers come from SIMULATED auditors "
                               "(`photogenic review audit simulate`), not from people")
    result["notes"].append("false-reject rate: share of a reason's rejects that reviewers would have kept; "
                           f"Wilson {cfg.confidence:.0%} intervals; curves weight each audited image by its "
                           "stratum's population / answered images")
    write_file_atomic(audit_dir(run) / "thresholds.toml", lambda f: f.write(thresholds_toml(result).encode()))
    write_json_atomic(result, audit_dir(run) / "audit.json")
    mark_success(audit_dir(run))
    return result


def thresholds_toml(result: dict[str, Any]) -> str:
    """The suggestions as a config snippet, one [filters.NAME] table per filter."""
    lines = [f"# Suggested by `photogenic review audit pull` for an estimated false-reject rate <= "
             f"{result['target_false_reject']:.0%}, from {result['images_answered']} audited image(s)"
             + (" (SIMULATED answers)" if result["simulated"] else "") + ".",
             "# Each line moves one threshold with the others as configured; review before use."]
    by_filter: dict[str, list[str]] = {}
    for c in result["curves"]:
        s, now = c["suggested"], c["current_point"] or {}
        if s is None:
            lines.append(f"# [filters.{c['filter']}] {c['field']} = {c['current']!r} stays: no other threshold "
                         "has its estimated false-reject rate under the target on enough audited images")
            continue
        frr = now.get("false_reject_rate")
        by_filter.setdefault(c["filter"], []).append(
            f"{c['field']} = {s['threshold']!r}  # now {c['current']!r}: rejects {s['reject_share']:.1%} of scored "
            f"rows (now {now.get('reject_share', 0):.1%}), est. false-reject rate {s['false_reject_rate']:.1%}"
            + (f" (now {frr:.1%})" if frr is not None else ""))
    for name, entries in by_filter.items():
        lines += ["", f"[filters.{name}]", *entries]
    return "\n".join(lines) + "\n"
