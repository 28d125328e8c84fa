"""Reading a run into plain data for the report: dicts, lists and numbers, no HTML, no figures.

Every number comes from the run's own files: parquet through DuckDB, the JSON the stages wrote.
Stage outcomes are read generically through `read_summary` where a stage wrote `_summary.json`,
else from the files that stage writes today (scores/_funnel.json, candidates/_summary.json in
select's older shape, review/NAME/decisions.parquet, export/lineage.json). Review passes are
discovered, not named: every review/NAME/ holding decisions.parquet is one, ordered by its
summary's `details.pass_index` and then by name.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import duckdb

from photogenic.filters.registry import PluginError, builtin_registry, resolve
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import CorruptFile, committed_parquet, is_complete, sql_quote
from photogenic.pipeline.core.storage import duckdb_location, register_filesystems
from photogenic.pipeline.core.runio import read_json as read_run_json
from photogenic.pipeline.core.summary import StageSummary, read_details, read_summary

log = logging.getLogger(__name__)

THUMBS_PER_SHEET = 8


def histogram_specs(config: dict | None) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Histogram -> (SQL expression over the scores table, [(threshold label, config path)]), as the
    run's filters declare them (`filters.registry`), plugins of the run's `[job] plugins` included."""
    plugins = config_value(config, "job.plugins") or []
    try:
        return resolve(plugins).histograms()
    except PluginError as err:  # the report still shows the built-in filters' charts
        log.warning("report: %s; its histograms are left out", err)
        return builtin_registry().histograms()


ANNOTATOR_COLUMNS = ("annotator", "completed_by", "annotator_id", "user", "user_id", "email")
SIMULATION_KEYS = ("simulated", "simulation", "is_simulated")


class ReportError(click.ClickException):
    pass


def read_json(path: Path) -> Any:
    """Parsed JSON at `path`, None when missing; a corrupt file is a ReportError naming it."""
    try:
        return read_run_json(path, strict=True)
    except CorruptFile as err:
        raise ReportError(str(err)) from None


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("skipping a malformed line in %s", path)  # a killed writer's last line
    return rows


# --- review passes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewPass:
    name: str  # the folder under review/
    view: str  # the prefix of its DuckDB views (pass names need not be SQL identifiers)
    pass_index: Any = None  # details.pass_index of its stage summary, when it wrote one

    @property
    def number(self) -> int | None:
        match = re.fullmatch(r"pass(\d+)", self.name)
        return int(match.group(1)) if match else None

    @property
    def label(self) -> str:
        """`pass 2` for review/pass2/, the folder name otherwise."""
        return f"pass {self.number}" if self.number is not None else self.name

    @property
    def decisions(self) -> str:
        return f"{self.view}_decisions"

    @property
    def annotations(self) -> str:
        return f"{self.view}_annotations"


def _natural(name: str) -> list:
    # pass2 before pass10.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def review_passes(run: RunDir) -> list[ReviewPass]:
    """Every review/NAME/ holding decisions.parquet, in review order."""
    root = run.review_root
    if not root.is_dir():
        return []
    found = []
    for directory in root.iterdir():
        if directory.name.startswith((".", "_")) or not run.decisions(directory.name).is_file():
            continue
        summary = read_summary(directory)
        found.append((directory.name, summary.details.get("pass_index") if summary else None))

    def order(item: tuple[str, Any]) -> tuple:
        name, index = item
        numeric = isinstance(index, (int, float)) and not isinstance(index, bool)
        return (not numeric, index if numeric else 0, _natural(name))

    return [ReviewPass(name, f"review{i}", index)
            for i, (name, index) in enumerate(sorted(found, key=order), start=1)]


# --- the run as DuckDB views --------------------------------------------------------------------


class Run:
    """The run directory, with its parquet outputs registered as DuckDB views."""

    def __init__(self, root: Path):
        self.root = root
        self.dirs = RunDir.of(root)
        self.passes = review_passes(self.dirs)
        self.db = duckdb.connect()
        self.tables: dict[str, list[str]] = {}
        self.broken: dict[str, str] = {}
        layout: dict[str, Path] = {"scores": self.dirs.scores, "candidates": self.dirs.candidates}
        for p in self.passes:
            layout[p.decisions] = self.dirs.decisions(p.name)
            layout[p.annotations] = self.dirs.annotations(p.name)
        layout["manifest"] = self.dirs.export / "manifest.parquet"
        layout["eval_pairs"] = self.dirs.eval / "pairs.parquet"
        for name, path in layout.items():
            self._register(name, path)

    def _register(self, name: str, path: Path) -> None:
        if path.suffix == ".parquet":
            files = [path] if path.is_file() else []
        else:
            files = committed_parquet(path)
        if not files:
            return
        register_filesystems(self.db, files)  # a run on a store: DuckDB reads it through fsspec
        files = [duckdb_location(f) for f in files]
        listing = ", ".join(sql_quote(f) for f in files)
        try:
            self.db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
        except duckdb.Error as err:
            self.broken[name] = f"{path}: {str(err).splitlines()[0]}"
            return
        self.tables[name] = files

    def has(self, name: str) -> bool:
        if name in self.broken:  # sections that need it fail with the reason; the others render
            raise ReportError(self.broken[name])
        return name in self.tables

    def columns(self, name: str) -> list[str]:
        return [r[0] for r in self.db.execute(f"DESCRIBE {name}").fetchall()] if self.has(name) else []

    def scalar(self, sql: str, params: list | None = None) -> Any:
        return self.db.execute(sql, params or []).fetchone()[0]

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.db.execute(sql, params or []).fetchall()

    def count(self, name: str, where: str = "") -> int | None:
        if not self.has(name):
            return None
        return int(self.scalar(f"SELECT count(*) FROM {name} {('WHERE ' + where) if where else ''}"))

    def kept(self, review: ReviewPass) -> int | None:
        if not self.has(review.decisions):
            return None
        return self.count(review.decisions, "keep") if "keep" in self.columns(review.decisions) else None

    def has_keep_decisions(self, review: ReviewPass) -> bool:
        return self.has(review.decisions) and {"key", "keep"} <= set(self.columns(review.decisions))


# --- sections -----------------------------------------------------------------------------------


@dataclass
class Section:
    id: str
    title: str
    present: bool = True
    note: str = ""  # shown when not present, or as a caveat
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    charts: dict[str, Any] = field(default_factory=dict)  # figures and thumbnails (charts.py)
    kind: str = ""  # which template shows it; "" means the one named like `id`

    def __post_init__(self) -> None:
        self.kind = self.kind or self.id


def config_value(config: dict | None, dotted: str) -> Any:
    node: Any = config or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class Context:
    """What several sections read once: the recorded config and the stages' own JSON."""

    funnel_json: dict[str, Any]
    config: dict[str, Any] | None
    select_details: dict[str, Any]
    meaningless: list[str]
    thumbs: int = THUMBS_PER_SHEET


def select_details(run: RunDir) -> dict[str, Any]:
    """Select's own counts: `details` of its stage summary, or its older private _summary.json."""
    return read_details(run.candidates)


def _filter_summary_config(run: RunDir) -> dict[str, Any] | None:
    # The whole config, when the filter's stage summary records it (the histograms' thresholds).
    summary = read_summary(run.scores)
    return summary.config if summary is not None and "filters" in summary.config else None


def context(run: Run, thumbs: int) -> Context:
    funnel_json = read_json(run.dirs.funnel) or {}
    job_json = read_json(run.dirs.scores / "_job.json") or {}
    config = funnel_json.get("config") or job_json.get("config") or _filter_summary_config(run.dirs)
    return Context(funnel_json=funnel_json, config=config, select_details=select_details(run.dirs),
                   meaningless=funnel_json.get("meaningless") or [], thumbs=thumbs)


def _pass_label(review: ReviewPass, last: bool) -> str:
    return f"kept in review {review.label}" + (" (curated)" if last else "")


def funnel_section(run: Run, ctx: Context) -> Section:
    if run.count("scores") is None:
        return Section("funnel", "Funnel", present=False, note="filter not run yet: no scores/*.parquet")
    model_trained = (run.dirs.model / "model_index.json").exists()
    model_count, model_source = None, "model/training_state/run.json: train_images"
    train_info = read_json(run.dirs.model / "training_state" / "run.json") or {}
    if model_trained and isinstance(train_info.get("train_images"), int):
        model_count = train_info["train_images"]
    elif model_trained and run.has("manifest"):
        split = "split" in run.columns("manifest")
        model_count = run.count("manifest", "split = 'train'" if split else "")
        model_source = "export/manifest.parquet" + (": split = train" if split else "") + " (model/ present)"
    # (id, label, count, read from, stage folder whose _SUCCESS says it finished)
    stages: list[tuple[str, str, int | None, str, Path | None]] = [
        ("pool_rows", "pool rows scored", run.count("scores"), "scores/*.parquet", run.dirs.scores),
        ("scores_passed", "passed the filters", run.count("scores", "passed"), "scores: passed", run.dirs.scores),
        ("candidates", "candidates after dedup + balancing", run.count("candidates"), "candidates/*.parquet",
         run.dirs.candidates),
    ]
    for i, p in enumerate(run.passes):
        stages.append((f"{p.name}_kept", _pass_label(p, i == len(run.passes) - 1), run.kept(p),
                       f"review/{p.name}/decisions.parquet: keep", run.dirs.review(p.name)))
    if not run.passes:  # the funnel still shows where review comes
        stages.append(("review_kept", "kept in review", None, "review/*/decisions.parquet: keep", None))
    stages += [
        ("export", "exported", run.count("manifest"), "export/manifest.parquet", run.dirs.export),
        ("model", "training images used by the model", model_count, model_source, None),
    ]
    top = stages[0][2] or 1
    rows = [
        {"id": sid, "label": label, "count": n, "source": src,
         "pct": None if n is None else 100.0 * n / top,
         # Counted from committed files, but the stage has not finished (no _SUCCESS yet).
         "in_progress": n is not None and folder is not None and not is_complete(folder)}
        for sid, label, n, src, folder in stages
    ]
    reasons = run.rows(
        "SELECT coalesce(nullif(reject_reason, ''), '(none)') AS r, count(*) FROM scores "
        "WHERE NOT coalesce(passed, false) GROUP BY r ORDER BY count(*) DESC, r"
    )
    return Section("funnel", "Funnel", data={
        "selection": _selection_info(ctx.select_details), "export_info": _export_info(run),
        "stages": rows, "reasons": [{"reason": r, "count": int(n)} for r, n in reasons],
        "skipped_filters": ctx.funnel_json.get("skipped_filters") or {},
        # Adaptive runs: the reasons above follow the order each batch ran in (batches per order).
        "cascade_orders": ctx.funnel_json.get("cascade_orders") or {},
    })


def _selection_info(summary: dict[str, Any]) -> dict[str, Any]:
    selection = {}
    if isinstance(summary.get("duplicates_removed"), dict):
        selection["duplicates removed (exact)"] = summary["duplicates_removed"].get("exact")
        selection["duplicates removed (near)"] = summary["duplicates_removed"].get("near")
    for key in ("target", "seed"):
        if key in summary:
            selection[f"selection {key}"] = summary[key]
    if isinstance(summary.get("engagement"), dict):
        selection["engagement ranking"] = summary["engagement"].get("method")
    return selection


def _export_info(run: Run) -> dict[str, Any]:
    lineage = read_json(run.dirs.export / "lineage.json") or {}
    if not lineage:
        return {}
    counts = lineage.get("counts") or {}
    info = {"exported from": lineage.get("from"), "splits": counts.get("splits"),
            "rows skipped at export": counts.get("skipped"),
            "files with sha256 in lineage.json": len(lineage.get("files") or {}),
            "CLIP model": (lineage.get("models") or {}).get("clip")}
    return {k: v for k, v in info.items() if v is not None}


# --- stage summaries ----------------------------------------------------------------------------


def _summary_data(summary: StageSummary, source: str) -> dict[str, Any]:
    by_reason = sorted(summary.by_reason.items(), key=lambda kv: (-_as_number(kv[1]), str(kv[0])))
    return {"stage": summary.stage, "source": source, "rows_in": summary.rows_in,
            "rows_out": summary.rows_out, "seconds": summary.seconds,
            "by_reason": [{"reason": str(r), "count": n} for r, n in by_reason],
            "details": summary.details, "config": summary.config,
            "input_fingerprint": summary.input_fingerprint}


def _as_number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _filter_fallback(run: Run, ctx: Context) -> StageSummary | None:
    funnel = ctx.funnel_json
    if "rows_in" not in funnel:
        return None
    left_out = ("config", "config_toml", "rows_in", "passed", "reject_reasons", "wall_seconds_this_run")
    return StageSummary("filter", funnel.get("fingerprint", ""), funnel["rows_in"], funnel.get("passed") or 0,
                        by_reason=funnel.get("reject_reasons") or {},
                        seconds=funnel.get("wall_seconds_this_run"),
                        details={k: v for k, v in funnel.items() if k not in left_out})


def _select_fallback(run: Run, ctx: Context) -> StageSummary | None:
    details = ctx.select_details
    if not details:
        return None
    source = details.get("input") if isinstance(details.get("input"), dict) else {}
    removed = details.get("duplicates_removed") if isinstance(details.get("duplicates_removed"), dict) else {}
    # rows_in None: this older file does not say (shown as "–").
    return StageSummary("select", "", source.get("passed"), details.get("selected"),
                        by_reason={f"duplicates removed ({k})": v for k, v in removed.items()},
                        details=details)


def _review_fallback(run: Run, review: ReviewPass) -> StageSummary | None:
    decided = run.count(review.decisions)
    if decided is None:
        return None
    kept = run.kept(review)
    return StageSummary("review", "", decided, kept,
                        by_reason={"not kept": decided - kept} if kept is not None else {},
                        details={"pass": review.name})


def _export_fallback(run: Run, ctx: Context) -> StageSummary | None:
    lineage = read_json(run.dirs.export / "lineage.json") or {}
    counts = lineage.get("counts") or {}
    if "exported" not in counts:
        return None
    read = counts.get("read_from_stage") or {}
    return StageSummary("export", lineage.get("input_fingerprint", ""), read.get("kept") or 0,
                        counts["exported"], by_reason={"skipped": counts.get("skipped") or 0},
                        details={"from": lineage.get("from"), "splits": counts.get("splits")})


def stage_summary_sections(run: Run, ctx: Context) -> list[Section]:
    """One section per stage outcome: its _summary.json, else what the stage writes today."""
    stages: list[tuple[str, str, Path, Callable[[], StageSummary | None], str]] = [
        ("scores", "filter", run.dirs.scores, lambda: _filter_fallback(run, ctx), "scores/_funnel.json"),
        ("candidates", "select", run.dirs.candidates, lambda: _select_fallback(run, ctx),
         "candidates/_summary.json in select's older shape"),
    ]
    for p in run.passes:
        stages.append((f"review-{p.name}", f"review {p.label}", run.dirs.review(p.name),
                       lambda p=p: _review_fallback(run, p), f"review/{p.name}/decisions.parquet"))
    stages.append(("export", "export", run.dirs.export, lambda: _export_fallback(run, ctx),
                   "export/lineage.json"))
    sections = []
    for slug, title, directory, fallback, fallback_source in stages:
        summary, source = read_summary(directory), f"{directory.relative_to(run.root)}/_summary.json"
        if summary is None:
            summary, source = fallback(), f"{fallback_source} (the stage wrote no _summary.json)"
        if summary is not None:
            sections.append(_summary_section(slug, title, summary, source))
    # Any other stage that writes a summary (train, eval, one added later) gets its section too.
    known = {run.dirs.scores, run.dirs.candidates, run.dirs.review_root, run.dirs.export, run.dirs.report}
    for directory in sorted(p for p in run.root.iterdir() if p.is_dir() and p not in known
                            and not p.name.startswith((".", "_"))):
        if (summary := read_summary(directory)) is not None:
            sections.append(_summary_section(directory.name, summary.stage, summary,
                                             f"{directory.name}/_summary.json"))
    return sections


def _summary_section(slug: str, title: str, summary: StageSummary, source: str) -> Section:
    return Section(f"summary-{_slug(slug)}", f"Stage: {title}", kind="stage_summary",
                   data=_summary_data(summary, source))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "stage"


# --- score distributions ------------------------------------------------------------------------


def _histogram(run: Run, expr: str, bins: int = 30) -> tuple[list[float], list[int], int] | None:
    finite = f"isfinite(({expr})::DOUBLE)"
    lo, hi, n = run.rows(f"SELECT min({expr}), max({expr}), count({expr}) FROM scores WHERE {finite}")[0]
    if not n:
        return None
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    counts = [0] * bins
    # Binned inside DuckDB so a billion-row table never comes into Python.
    for b, c in run.rows(
        f"SELECT least(floor((({expr})::DOUBLE - ?) / ?)::BIGINT, ?) AS b, count(*) FROM scores "
        f"WHERE isfinite(({expr})::DOUBLE) GROUP BY b", [lo, width, bins - 1]
    ):
        counts[int(b)] += int(c)
    edges = [lo + i * width for i in range(bins + 1)]
    return edges, counts, int(n)


def histograms_section(run: Run, ctx: Context) -> Section:
    if not run.has("scores"):
        return Section("histograms", "Score histograms", present=False, note="filter not run yet")
    meaningless = set(ctx.meaningless)
    columns = set(run.columns("scores"))
    histograms = []
    for title, (expr, thresholds) in histogram_specs(ctx.config).items():
        needed = {c for c in ("width", "height") if c in expr} or {expr}
        if not needed <= columns:
            continue
        hist = _histogram(run, expr)
        if hist is None:
            continue
        edges, counts, n = hist
        lines = [{"label": label, "value": value} for label, path in thresholds
                 if (value := config_value(ctx.config, path)) is not None]
        histograms.append({"title": title, "column": expr, "edges": edges, "counts": counts, "n": n,
                           "thresholds": lines, "meaningless": expr in meaningless})
    if not histograms:
        return Section("histograms", "Score histograms", present=False, note="no score columns have values")
    note = "" if ctx.config else "the run records no config: thresholds are not drawn"
    return Section("histograms", "Score histograms", note=note, data={"histograms": histograms})


def _concept_counts(run: Run, sql: str) -> dict[str, int]:
    return {str(c): int(n) for c, n in run.rows(sql)}


def concepts_section(run: Run, ctx: Context) -> Section:
    if not run.has("scores") or "concept" not in run.columns("scores"):
        return Section("concepts", "Concept mix", present=False, note="filter not run yet")
    series = {"passed filters": _concept_counts(
        run, "SELECT coalesce(concept, '(none)'), count(*) FROM scores WHERE passed GROUP BY 1")}
    summary = ctx.select_details
    if isinstance(summary.get("concepts"), dict):
        series["after dedup"] = {str(c): int(v.get("after_dedup") or 0) for c, v in summary["concepts"].items()
                                 if isinstance(v, dict)}
    if run.has("candidates") and "concept" in run.columns("candidates"):
        series["candidates (balanced)"] = _concept_counts(
            run, "SELECT coalesce(concept, '(none)'), count(*) FROM candidates GROUP BY 1")
        for p in run.passes:
            if run.has_keep_decisions(p):
                series[f"review {p.label} kept"] = _concept_counts(
                    run, f"SELECT coalesce(c.concept, '(none)'), count(*) FROM {p.decisions} d "
                    f"JOIN candidates c USING (key) WHERE d.keep GROUP BY 1")
    concepts = sorted({c for s in series.values() for c in s}, key=lambda c: -series["passed filters"].get(c, 0))
    if not concepts:
        return Section("concepts", "Concept mix", present=False, note="no row passed the filters")
    table = [{"concept": c, "counts": [series[s].get(c, 0) for s in series]} for c in concepts]
    return Section("concepts", "Concept mix", data={"series": series, "concepts": concepts, "table": table})


# --- contact sheets -----------------------------------------------------------------------------


def _kept_keys_sql(run: Run) -> tuple[str, str]:
    """SQL for the keys of the deepest kept set, and its name."""
    if run.has("manifest") and "key" in run.columns("manifest"):
        return "SELECT key FROM manifest", "exported"
    for p in reversed(run.passes):
        if run.has_keep_decisions(p):
            return f"SELECT key FROM {p.decisions} WHERE keep", f"kept in review {p.label}"
    if run.has("candidates"):
        return "SELECT key FROM candidates", "candidates"
    return "SELECT key FROM scores WHERE passed", "passed the filters"


def _sheet_items(rows: list[tuple]) -> list[dict]:
    return [{"key": k, "caption": (cap or "")[:120], "detail": det or "", "source": src}
            for k, cap, det, src in rows]


def thumbnails_section(run: Run, ctx: Context) -> Section:
    if not run.has("scores"):
        return Section("thumbnails", "Contact sheets", present=False, note="filter not run yet")
    sheets = []
    kept_sql, kept_name = _kept_keys_sql(run)
    kept = run.rows(
        f"SELECT key, caption, '' AS detail, source FROM scores WHERE key IN ({kept_sql}) ORDER BY key LIMIT ?",
        [ctx.thumbs])
    if kept:
        sheets.append({"id": "kept", "title": f"kept ({kept_name})", "images": _sheet_items(kept)})
    for (reason,) in run.rows("SELECT DISTINCT reject_reason FROM scores WHERE NOT coalesce(passed, false) ORDER BY 1"):
        rows = run.rows(
            "SELECT key, caption, reject_detail, source FROM scores WHERE NOT coalesce(passed, false) "
            "AND reject_reason IS NOT DISTINCT FROM ? ORDER BY key LIMIT ?", [reason, ctx.thumbs]
        )
        sheets.append({"id": f"rejected-{reason or 'none'}", "title": f"rejected: {reason or '(no reason)'}",
                       "images": _sheet_items(rows)})
    return Section("thumbnails", "Contact sheets", data={"sheets": sheets})


# --- review -------------------------------------------------------------------------------------


def _is_simulated(quality: Any, run: Run, review: ReviewPass) -> bool:
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return any((k in SIMULATION_KEYS and bool(v)) or walk(v) for k, v in node.items())
        return False

    if walk(quality):
        return True
    for table in (review.annotations, review.decisions):
        cols = set(run.columns(table))
        for key in SIMULATION_KEYS:
            if key in cols and run.scalar(f"SELECT bool_or({key}) FROM {table}"):
                return True
    return (run.dirs.review(review.name) / "_SIMULATED").exists()


def _pass_info(run: Run, review: ReviewPass) -> dict[str, Any]:
    pass_dir = run.dirs.review(review.name)
    info: dict[str, Any] = {
        "name": review.name, "label": review.label,
        # Shown as "Pass N" and data-review-pass="N" for review/passN/, the name otherwise.
        "pass": review.number if review.number is not None else review.name,
        "complete": is_complete(pass_dir),
        "decisions": run.count(review.decisions), "kept": run.kept(review),
        "annotations": run.count(review.annotations),
    }
    if info["decisions"]:
        info["keep_rate"] = (info["kept"] or 0) / info["decisions"]
    cols = run.columns(review.annotations)
    who = next((c for c in ANNOTATOR_COLUMNS if c in cols), None)
    if who:
        info["annotator_column"] = who
        info["per_annotator"] = [
            {"annotator": str(a), "annotations": int(n)}
            for a, n in run.rows(f"SELECT {who}, count(*) FROM {review.annotations} GROUP BY 1 ORDER BY 2 DESC, 1")
        ]
    if "key" in cols:
        info["tasks_annotated"] = int(run.scalar(f"SELECT count(DISTINCT key) FROM {review.annotations}"))
    if "complete" in run.columns(review.decisions):
        info["tasks_complete"] = run.count(review.decisions, "complete")
    order = {"quality": 0, "progress": 1, "simulation": 2}  # the figures people look for first
    info["quality"] = {
        path.stem: read_json(path)
        for path in sorted(pass_dir.glob("*.json"), key=lambda p: (order.get(p.stem, 9), p.name))
        if not path.name.startswith(("_", ".")) and path.name != "head.pth.json"
    }
    info["simulated"] = _is_simulated(info["quality"], run, review)
    # The head learnt from this pass's decisions (annotation/head.py), if any.
    info["head"] = read_json(pass_dir / "head.pth.json")
    return info


def review_section(run: Run, ctx: Context) -> Section:
    passes = [_pass_info(run, p) for p in run.passes]
    if not passes:
        return Section("review", "Human review", present=False, note="review not run yet")
    return Section("review", "Human review", data={"passes": passes})


# --- training and eval --------------------------------------------------------------------------


def training_section(run: Run, ctx: Context) -> Section:
    state = run.dirs.model / "training_state"
    metrics = read_jsonl(state / "metrics.jsonl")
    if not metrics:
        return Section("training", "Training", present=False, note="training not run yet")
    step_key = next((k for k in ("step", "global_step", "iteration") if k in metrics[0]), None)
    numeric = sorted({k for row in metrics for k, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k != step_key})
    groups = {"loss": [k for k in numeric if "loss" in k],
              "learning rate": [k for k in numeric if k in ("lr", "learning_rate")]}
    series = {title: {k: [(row.get(step_key, i), row[k]) for i, row in enumerate(metrics)
                          if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])]
                      for k in keys}
              for title, keys in groups.items() if keys}
    json_files = {p.stem: read_json(p) for p in sorted(state.glob("*.json")) if not p.name.startswith(("_", "."))}
    return Section("training", "Training", data={
        "series": series, "step_key": step_key, "records": len(metrics), "last": metrics[-1],
        "state": json_files,
    })


def eval_section(run: Run, ctx: Context) -> Section:
    eval_dir = run.dirs.eval
    auto = read_json(eval_dir / "results.json")
    human = read_json(eval_dir / "human_results.json")
    if not auto and not human:
        return Section("eval", "Evaluation: base vs tuned", present=False, note="eval not run yet")
    examples = []
    if run.has("eval_pairs"):
        # One pair per category, side by side: people would rather look than read.
        cursor = run.db.execute(
            "SELECT * FROM eval_pairs QUALIFY row_number() OVER (PARTITION BY category ORDER BY pair_id) = 1 "
            "ORDER BY category LIMIT ?", [ctx.thumbs])
        names = [c[0] for c in cursor.description]
        for row in (dict(zip(names, values)) for values in cursor.fetchall()):
            examples.append({**row, "base_source": str(eval_dir / row["base_image"]),
                             "tuned_source": str(eval_dir / row["tuned_image"])})
    return Section("eval", "Evaluation: base vs tuned", data={"auto": auto, "human": human, "examples": examples})


def audit_section(run: Run, ctx: Context) -> Section:
    """The reject audit (annotation/audit.py): false-reject rates per reason, threshold curves."""
    audit_dir = run.dirs.review_root / "audit"
    result = read_json(audit_dir / "audit.json")
    if not result:
        return Section("audit", "Reject audit", present=False,
                       note="not run yet (`photogenic review audit push|pull --run RUN`)")
    snippet = audit_dir / "thresholds.toml"
    curves = [c for c in result.get("curves") or [] if any(p.get("support") for p in c.get("points") or [])]
    return Section("audit", "Reject audit", data={**result, "charted": curves,
                                                  "thresholds_toml": snippet.read_text() if snippet.exists() else ""})


# Sections in page order; each builder gives one section, or a list of them.
SECTIONS: list[Callable[[Run, Context], Section | list[Section]]] = [
    funnel_section, stage_summary_sections, histograms_section, concepts_section,
    thumbnails_section, review_section, audit_section, training_section, eval_section,
]
