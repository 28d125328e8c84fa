"""`photogenic report --run RUN`: one self-contained HTML page that shows what every stage did.

Every number is read from the run's own files (parquet through DuckDB, JSON written by the
stages); charts are matplotlib PNGs and thumbnails small JPEGs, both embedded as data URIs so
`RUN/report/index.html` can be mailed or opened anywhere. A section whose stage has not run says
so instead of failing, and a section whose files cannot be read says why.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import duckdb

from photogenic.filters.registry import PluginError, builtin_registry, resolve
from photogenic.pipeline.core.runio import is_complete, mark_success, remove_stale_tmp, write_bytes_atomic

log = logging.getLogger(__name__)

THUMB_PX = 112
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


# --- reading the run ------------------------------------------------------------------------


def parquet_files(directory: Path) -> list[str]:
    """Committed parquet files under `directory` (temp files and `_`-prefixed ones are skipped)."""
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.rglob("*.parquet")):
        rel = p.relative_to(directory).parts
        if any(part.startswith((".", "_")) for part in rel):
            continue
        out.append(str(p))
    return out


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ReportError(f"cannot read {path}: {err}") from None


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


class Run:
    """The run directory, with its parquet outputs registered as DuckDB views."""

    def __init__(self, root: Path):
        self.root = root
        self.db = duckdb.connect()
        self.tables: dict[str, list[str]] = {}
        self.broken: dict[str, str] = {}
        layout = {
            "scores": root / "scores",
            "candidates": root / "candidates",
            "pass1_decisions": root / "review" / "pass1" / "decisions.parquet",
            "pass1_annotations": root / "review" / "pass1" / "annotations.parquet",
            "pass2_decisions": root / "review" / "pass2" / "decisions.parquet",
            "pass2_annotations": root / "review" / "pass2" / "annotations.parquet",
            "manifest": root / "export" / "manifest.parquet",
            "eval_pairs": root / "eval" / "pairs.parquet",
        }
        for name, path in layout.items():
            if path.suffix == ".parquet":
                files = [str(path)] if path.is_file() else []
            else:
                files = parquet_files(path)
            if not files:
                continue
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            try:
                self.db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
            except duckdb.Error as err:
                self.broken[name] = f"{path}: {str(err).splitlines()[0]}"
                continue
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

    def kept(self, review_pass: int) -> int | None:
        name = f"pass{review_pass}_decisions"
        if not self.has(name):
            return None
        return self.count(name, "keep") if "keep" in self.columns(name) else None


# --- charts and thumbnails -------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_uri(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bar_chart(labels: list[str], values: list[float], title: str, xlabel: str = "rows") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:,}" if isinstance(v, int) else f" {v:.3g}", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.15)
    return figure_uri(fig)


def thumbnail_uri(source: str | None) -> str | None:
    """A small JPEG of the image at `source`, or None when it cannot be read or decoded."""
    if not source:
        return None
    from PIL import Image

    from photogenic.pipeline.pool.sources import read_source

    try:
        data = read_source(source)
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at reduced scale
            img = img.convert("RGB")
            img.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=70)
    except Exception as err:  # any undecodable input shows as a placeholder, never a crash
        log.debug("no thumbnail for %s: %s", source, err)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --- sections ---------------------------------------------------------------------------------


@dataclass
class Section:
    id: str
    title: str
    present: bool = True
    note: str = ""  # shown when not present, or as a caveat
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def config_value(config: dict | None, dotted: str) -> Any:
    node: Any = config or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def funnel_section(run: Run, ctx: dict) -> Section:
    model_trained = (run.root / "model" / "model_index.json").exists()
    model_count, model_source = None, "model/training_state/run.json: train_images"
    train_info = read_json(run.root / "model" / "training_state" / "run.json") or {}
    if model_trained and isinstance(train_info.get("train_images"), int):
        model_count = train_info["train_images"]
    elif model_trained and run.has("manifest"):
        split = "split" in run.columns("manifest")
        model_count = run.count("manifest", "split = 'train'" if split else "")
        model_source = "export/manifest.parquet" + (": split = train" if split else "") + " (model/ present)"
    stages = [
        ("pool_rows", "pool rows scored", run.count("scores"), "scores/*.parquet"),
        ("scores_passed", "passed the filters", run.count("scores", "passed"), "scores: passed"),
        ("candidates", "candidates after dedup + balancing", run.count("candidates"), "candidates/*.parquet"),
        ("pass1_kept", "kept in review pass 1", run.kept(1), "review/pass1/decisions.parquet: keep"),
        ("pass2_kept", "kept in review pass 2 (curated)", run.kept(2), "review/pass2/decisions.parquet: keep"),
        ("export", "exported", run.count("manifest"), "export/manifest.parquet"),
        ("model", "training images used by the model", model_count, model_source),
    ]
    if run.count("scores") is None:
        return Section("funnel", "Funnel", present=False, note="filter not run yet: no scores/*.parquet")
    top = stages[0][2] or 1
    stage_dirs = {"pool_rows": "scores", "scores_passed": "scores", "candidates": "candidates",
                  "pass1_kept": "review/pass1", "pass2_kept": "review/pass2", "export": "export"}
    rows = [
        {"id": sid, "label": label, "count": n, "source": src,
         "pct": None if n is None else 100.0 * n / top,
         # Counted from committed files, but the stage has not finished (no _SUCCESS yet).
         "in_progress": n is not None and sid in stage_dirs and not is_complete(run.root / stage_dirs[sid])}
        for sid, label, n, src in stages
    ]
    shown = [r for r in rows if r["count"] is not None]
    chart = bar_chart([r["label"] for r in shown], [r["count"] for r in shown], "rows at each stage")
    reasons = run.rows(
        "SELECT coalesce(nullif(reject_reason, ''), '(none)') AS r, count(*) FROM scores "
        "WHERE NOT coalesce(passed, false) GROUP BY r ORDER BY count(*) DESC, r"
    )
    reason_rows = [{"reason": r, "count": int(n)} for r, n in reasons]
    reason_chart = (bar_chart([r["reason"] for r in reason_rows], [r["count"] for r in reason_rows],
                              "rejected rows by reason (first failing filter)") if reason_rows else None)
    funnel_json = ctx.get("funnel_json") or {}
    summary = ctx.get("select_summary") or {}
    selection = {}
    if isinstance(summary.get("duplicates_removed"), dict):
        selection["duplicates removed (exact)"] = summary["duplicates_removed"].get("exact")
        selection["duplicates removed (near)"] = summary["duplicates_removed"].get("near")
    for key in ("target", "seed"):
        if key in summary:
            selection[f"selection {key}"] = summary[key]
    if isinstance(summary.get("engagement"), dict):
        selection["engagement ranking"] = summary["engagement"].get("method")
    lineage = read_json(run.root / "export" / "lineage.json") or {}
    export_info = {}
    if lineage:
        counts = lineage.get("counts") or {}
        export_info = {"exported from": lineage.get("from"), "splits": counts.get("splits"),
                       "rows skipped at export": counts.get("skipped"),
                       "files with sha256 in lineage.json": len(lineage.get("files") or {}),
                       "CLIP model": (lineage.get("models") or {}).get("clip")}
    return Section("funnel", "Funnel", data={
        "selection": selection, "export_info": {k: v for k, v in export_info.items() if v is not None},
        "stages": rows, "chart": chart, "reasons": reason_rows, "reason_chart": reason_chart,
        "skipped_filters": funnel_json.get("skipped_filters") or {},
    })


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


def histograms_section(run: Run, ctx: dict) -> Section:
    if not run.has("scores"):
        return Section("histograms", "Score histograms", present=False, note="filter not run yet")
    config = ctx.get("config")
    meaningless = set(ctx.get("meaningless") or [])
    columns = set(run.columns("scores"))
    plt = _plt()
    charts = []
    for title, (expr, thresholds) in histogram_specs(config).items():
        needed = {c for c in ("width", "height") if c in expr} or {expr}
        if not needed <= columns:
            continue
        hist = _histogram(run, expr)
        if hist is None:
            continue
        edges, counts, n = hist
        fig, ax = plt.subplots(figsize=(4.2, 2.6))
        ax.stairs(counts, edges, fill=True, color="#8da0cb")
        drawn = []
        for label, path in thresholds:
            value = config_value(config, path)
            if value is None:
                continue
            ax.axvline(float(value), color="#d62728", linestyle="--", linewidth=1.5)
            drawn.append(f"{label} = {value}")
        bad = expr in meaningless
        ax.set_title(title + ("  (MEANINGLESS: random model)" if bad else ""), fontsize=9,
                     color="#d62728" if bad else "black")
        ax.set_ylabel("rows", fontsize=8)
        ax.tick_params(labelsize=7)
        charts.append({"title": title, "column": expr, "uri": figure_uri(fig), "n": n,
                       "thresholds": drawn, "meaningless": bad})
    if not charts:
        return Section("histograms", "Score histograms", present=False, note="no score columns have values")
    note = "" if config else "the run records no config: thresholds are not drawn"
    return Section("histograms", "Score histograms", note=note, data={"charts": charts})


def _concept_counts(run: Run, sql: str) -> dict[str, int]:
    return {str(c): int(n) for c, n in run.rows(sql)}


def concepts_section(run: Run, ctx: dict) -> Section:
    if not run.has("scores") or "concept" not in run.columns("scores"):
        return Section("concepts", "Concept mix", present=False, note="filter not run yet")
    series = {"passed filters": _concept_counts(
        run, "SELECT coalesce(concept, '(none)'), count(*) FROM scores WHERE passed GROUP BY 1")}
    summary = ctx.get("select_summary") or {}
    if isinstance(summary.get("concepts"), dict):
        series["after dedup"] = {str(c): int(v.get("after_dedup") or 0) for c, v in summary["concepts"].items()
                                 if isinstance(v, dict)}
    if run.has("candidates") and "concept" in run.columns("candidates"):
        series["candidates (balanced)"] = _concept_counts(
            run, "SELECT coalesce(concept, '(none)'), count(*) FROM candidates GROUP BY 1")
        for p in (1, 2):
            name = f"pass{p}_decisions"
            if run.has(name) and {"key", "keep"} <= set(run.columns(name)):
                series[f"review pass {p} kept"] = _concept_counts(
                    run, f"SELECT coalesce(c.concept, '(none)'), count(*) FROM {name} d "
                    f"JOIN candidates c USING (key) WHERE d.keep GROUP BY 1")
    concepts = sorted({c for s in series.values() for c in s}, key=lambda c: -series["passed filters"].get(c, 0))
    if not concepts:
        return Section("concepts", "Concept mix", present=False, note="no row passed the filters")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    width = 0.8 / len(series)
    for i, (name, counts) in enumerate(series.items()):
        total = sum(counts.values()) or 1
        ax.bar([x + i * width for x in range(len(concepts))], [100 * counts.get(c, 0) / total for c in concepts],
               width=width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(concepts))], concepts, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% of stage")
    ax.set_title("concept mix before and after balancing")
    ax.legend(fontsize=8)
    table = [{"concept": c, "counts": [series[s].get(c, 0) for s in series]} for c in concepts]
    return Section("concepts", "Concept mix", data={"chart": figure_uri(fig), "series": list(series), "table": table})


def _kept_keys_sql(run: Run) -> tuple[str, str] | None:
    """SQL for the keys of the deepest kept set, and its name."""
    if run.has("manifest") and "key" in run.columns("manifest"):
        return "SELECT key FROM manifest", "exported"
    for p in (2, 1):
        name = f"pass{p}_decisions"
        if run.has(name) and {"key", "keep"} <= set(run.columns(name)):
            return f"SELECT key FROM {name} WHERE keep", f"kept in review pass {p}"
    if run.has("candidates"):
        return "SELECT key FROM candidates", "candidates"
    return "SELECT key FROM scores WHERE passed", "passed the filters"


def _sheet(rows: list[tuple]) -> list[dict]:
    return [{"key": k, "caption": (cap or "")[:120], "detail": det or "", "uri": thumbnail_uri(src)}
            for k, cap, det, src in rows]


def thumbnails_section(run: Run, ctx: dict) -> Section:
    if not run.has("scores"):
        return Section("thumbnails", "Contact sheets", present=False, note="filter not run yet")
    limit = ctx.get("thumbs", THUMBS_PER_SHEET)
    sheets = []
    kept_sql, kept_name = _kept_keys_sql(run)
    kept = run.rows(
        f"SELECT key, caption, '' AS detail, source FROM scores WHERE key IN ({kept_sql}) ORDER BY key LIMIT ?", [limit]
    )
    if kept:
        sheets.append({"id": "kept", "title": f"kept ({kept_name})", "thumbs": _sheet(kept)})
    for (reason,) in run.rows("SELECT DISTINCT reject_reason FROM scores WHERE NOT coalesce(passed, false) ORDER BY 1"):
        rows = run.rows(
            "SELECT key, caption, reject_detail, source FROM scores WHERE NOT coalesce(passed, false) "
            "AND reject_reason IS NOT DISTINCT FROM ? ORDER BY key LIMIT ?", [reason, limit]
        )
        sheets.append({"id": f"rejected-{reason or 'none'}", "title": f"rejected: {reason or '(no reason)'}",
                       "thumbs": _sheet(rows)})
    return Section("thumbnails", "Contact sheets", data={"sheets": sheets})


def _is_simulated(quality: Any, run: Run, p: int) -> bool:
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return any((k in SIMULATION_KEYS and bool(v)) or walk(v) for k, v in node.items())
        return False

    if walk(quality):
        return True
    for table in (f"pass{p}_annotations", f"pass{p}_decisions"):
        cols = set(run.columns(table))
        for key in SIMULATION_KEYS:
            if key in cols and run.scalar(f"SELECT bool_or({key}) FROM {table}"):
                return True
    return (run.root / "review" / f"pass{p}" / "_SIMULATED").exists()


def review_section(run: Run, ctx: dict) -> Section:
    passes = []
    for p in (1, 2):
        pass_dir = run.root / "review" / f"pass{p}"
        if not pass_dir.exists():
            continue
        info: dict[str, Any] = {"pass": p, "complete": is_complete(pass_dir)}
        decisions, annotations = f"pass{p}_decisions", f"pass{p}_annotations"
        info["decisions"] = run.count(decisions)
        info["kept"] = run.kept(p)
        if info["decisions"]:
            info["keep_rate"] = (info["kept"] or 0) / info["decisions"]
        info["annotations"] = run.count(annotations)
        cols = run.columns(annotations)
        who = next((c for c in ANNOTATOR_COLUMNS if c in cols), None)
        if who:
            info["annotator_column"] = who
            info["per_annotator"] = [
                {"annotator": str(a), "annotations": int(n)}
                for a, n in run.rows(f"SELECT {who}, count(*) FROM {annotations} GROUP BY 1 ORDER BY 2 DESC, 1")
            ]
        if "key" in cols:
            info["tasks_annotated"] = int(run.scalar(f"SELECT count(DISTINCT key) FROM {annotations}"))
        if "complete" in run.columns(decisions):
            info["tasks_complete"] = run.count(decisions, "complete")
        quality = {}
        order = {"quality": 0, "progress": 1, "simulation": 2}  # the figures people look for first
        for path in sorted(pass_dir.glob("*.json"), key=lambda p: (order.get(p.stem, 9), p.name)):
            if path.name.startswith(("_", ".")):
                continue
            quality[path.stem] = read_json(path)
        info["quality"] = quality
        info["simulated"] = _is_simulated(quality, run, p)
        if info.get("per_annotator"):
            info["chart"] = bar_chart([a["annotator"] for a in info["per_annotator"]],
                                      [a["annotations"] for a in info["per_annotator"]],
                                      f"pass {p}: annotations per annotator", "annotations")
        passes.append(info)
    if not passes:
        return Section("review", "Human review", present=False, note="review not run yet")
    return Section("review", "Human review", data={"passes": passes})


def training_section(run: Run, ctx: dict) -> Section:
    state = run.root / "model" / "training_state"
    metrics = read_jsonl(state / "metrics.jsonl")
    if not metrics:
        return Section("training", "Training", present=False, note="training not run yet")
    step_key = next((k for k in ("step", "global_step", "iteration") if k in metrics[0]), None)
    numeric = sorted({k for row in metrics for k, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k != step_key})
    groups = {"loss": [k for k in numeric if "loss" in k],
              "learning rate": [k for k in numeric if k in ("lr", "learning_rate")]}
    plt = _plt()
    charts = []
    for title, keys in groups.items():
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(6, 2.8))
        for k in keys:
            pts = [(row.get(step_key, i), row[k]) for i, row in enumerate(metrics)
                   if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None, label=k)
        ax.set_xlabel(step_key or "record")
        ax.set_title(title)
        ax.legend(fontsize=8)
        charts.append({"title": title, "uri": figure_uri(fig)})
    json_files = {p.stem: read_json(p) for p in sorted(state.glob("*.json")) if not p.name.startswith(("_", "."))}
    return Section("training", "Training", data={
        "charts": charts, "records": len(metrics), "last": metrics[-1], "state": json_files,
    })


def eval_section(run: Run, ctx: dict) -> Section:
    eval_dir = run.root / "eval"
    auto = read_json(eval_dir / "results.json")
    human = read_json(eval_dir / "human_results.json")
    if not auto and not human:
        return Section("eval", "Evaluation: base vs tuned", present=False, note="eval not run yet")
    examples = []
    if run.has("eval_pairs"):
        # One pair per category, side by side: people would rather look than read.
        cursor = run.db.execute(
            "SELECT * FROM eval_pairs QUALIFY row_number() OVER (PARTITION BY category ORDER BY pair_id) = 1 "
            "ORDER BY category LIMIT ?", [ctx.get("thumbs", THUMBS_PER_SHEET)])
        names = [c[0] for c in cursor.description]
        for row in (dict(zip(names, values)) for values in cursor.fetchall()):
            examples.append({**row, "base_uri": thumbnail_uri(str(eval_dir / row["base_image"])),
                             "tuned_uri": thumbnail_uri(str(eval_dir / row["tuned_image"]))})
    return Section("eval", "Evaluation: base vs tuned", data={"auto": auto, "human": human, "examples": examples})


SECTIONS: list[Callable[[Run, dict], Section]] = [
    funnel_section, histograms_section, concepts_section, thumbnails_section,
    review_section, training_section, eval_section,
]


def _safe(builder: Callable[[Run, dict], Section], run: Run, ctx: dict) -> Section:
    try:
        return builder(run, ctx)
    except Exception as err:  # one unreadable stage output must not hide the others
        log.exception("report section %s failed", builder.__name__)
        name = builder.__name__.removesuffix("_section")
        return Section(name, name.capitalize(), present=False, error=f"{type(err).__name__}: {err}")


# --- page ------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())[:300]
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)[:300]
    return str(value)


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, node)]


def _split_tables(node: Any) -> tuple[list[tuple[str, Any]], dict[str, list[dict]]]:
    """Scalars (flattened) and lists of records (shown as tables) of a JSON document."""
    scalars, tables = [], {}
    for key, value in _flatten(node):
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables[key] = value
        else:
            scalars.append((key, value))
    return scalars, tables


def _all_first(table: dict) -> list[tuple[str, Any]]:
    """Rows of a by-category table with the overall row first (JSON files store keys sorted)."""
    return sorted(table.items(), key=lambda kv: (kv[0] != "all", kv[0]))


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def render(sections: list[Section], meta: dict) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(fmt=_fmt, flatten=_flatten, pct=_pct, split_tables=_split_tables, all_first=_all_first)
    return env.from_string(TEMPLATE).render(sections=sections, meta=meta)


def build_report(run_dir: str | Path, out: str | Path | None = None, thumbs: int = THUMBS_PER_SHEET) -> Path:
    """Write `RUN/report/index.html` (atomically) and return its path."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportError(f"run directory not found: {root}")
    out_dir = Path(out) if out else root / "report"
    remove_stale_tmp(out_dir)
    funnel_json = read_json(root / "scores" / "_funnel.json") or {}
    job_json = read_json(root / "scores" / "_job.json") or {}
    config = funnel_json.get("config") or job_json.get("config")
    ctx = {"funnel_json": funnel_json, "config": config, "select_summary": read_json(root / "candidates" / "_summary.json"), "meaningless": funnel_json.get("meaningless") or [],
           "thumbs": thumbs}
    run = Run(root)
    sections = [_safe(b, run, ctx) for b in SECTIONS]
    meta = {
        "run": str(root.resolve()),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "meaningless": ctx["meaningless"],
        "config_toml": funnel_json.get("config_toml") or "",
        "simulated": any(p.get("simulated") for s in sections if s.id == "review" and s.present
                         for p in s.data["passes"]),
        "eval_meaningless": any(
            (s.data.get("auto") or {}).get("meaningless") for s in sections if s.id == "eval" and s.present),
    }
    page = render(sections, meta)
    path = write_bytes_atomic(page.encode(), out_dir / "index.html")
    mark_success(out_dir)
    return path


@click.command("report")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder (default RUN/report).")
@click.option("--thumbs", type=click.IntRange(0, 64), default=THUMBS_PER_SHEET, show_default=True,
              help="Thumbnails per contact sheet.")
def report_cmd(run_dir: str, out: str | None, thumbs: int) -> None:
    """Write one self-contained HTML page showing the whole funnel of RUN."""
    path = build_report(run_dir, out, thumbs)
    click.echo(f"report: {path}")


TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Photogenic report: {{ meta.run }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px 40px;color:#222}
h1{margin-bottom:0} .sub{color:#666;margin-top:4px}
section{border-top:2px solid #eee;margin-top:24px;padding-top:8px}
table{border-collapse:collapse;margin:8px 0;font-size:14px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fde8e8;border:2px solid #d62728;color:#8b0000;padding:10px 14px;margin:12px 0;font-weight:600}
.sim{background:#fff4d6;border:2px solid #e6a700;color:#6b4e00;padding:8px 12px;margin:8px 0;font-weight:600}
.missing{color:#888;font-style:italic} .error{color:#b00}
.grid{display:flex;flex-wrap:wrap;gap:10px} .grid figure{margin:0}
.sheet{display:flex;flex-wrap:wrap;gap:6px} .thumb{width:{{ 112 }}px;font-size:10px;color:#555;overflow:hidden}
.thumb img,.thumb .ph{width:112px;height:112px;object-fit:contain;background:#f3f3f3;display:block}
.thumb .ph{display:flex;align-items:center;justify-content:center;color:#999}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto;max-height:240px}
</style></head><body>
<h1>Photogenic run report</h1>
<p class="sub">run <code>{{ meta.run }}</code> · generated {{ meta.generated }}</p>
{% if meta.meaningless %}<div class="warn" id="meaningless-warning" data-columns="{{ meta.meaningless|join(',') }}">
WARNING: {{ meta.meaningless|join(', ') }} come from a randomly initialised model (tiny-random CLIP):
these scores and any threshold on them are meaningless. Configure real weights for real numbers.</div>{% endif %}
{% if meta.simulated %}<div class="sim" id="simulation-warning">Human review in this run is a SIMULATION:
its annotations were generated by a script, not by people.</div>{% endif %}
{% if meta.eval_meaningless %}<div class="warn" id="eval-warning">The evaluation compares tiny random models and/or
uses a random CLIP scorer: its win rates are meaningless.</div>{% endif %}
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% if not loop.last %} · {% endif %}{% endfor %}</nav>

{% for s in sections %}
<section id="{{ s.id }}" data-section="{{ s.id }}" data-present="{{ 'true' if s.present else 'false' }}">
<h2>{{ s.title }}</h2>
{% if s.error %}<p class="error">could not read this stage's files: {{ s.error }}</p>
{% elif not s.present %}<p class="missing">{{ s.note or "not run yet" }}</p>
{% else %}{% if s.note %}<p class="missing">{{ s.note }}</p>{% endif %}
{% set d = s.data %}

{% if s.id == "funnel" %}
<table id="funnel-table"><tr><th>stage</th><th>rows</th><th>% of pool</th><th>read from</th></tr>
{% for st in d.stages %}<tr data-stage="{{ st.id }}"><td>{{ st.label }}</td>
<td class="n" {% if st.count is not none %}data-count="{{ st.count }}"{% endif %}>{{ st.count|fmt if st.count is not none else "not run yet" }}</td>
<td class="n">{{ "%.2f%%"|format(st.pct) if st.pct is not none else "" }}</td><td><code>{{ st.source }}</code>{% if st.in_progress %} <b data-in-progress="true">(stage in progress: no _SUCCESS yet)</b>{% endif %}</td></tr>{% endfor %}
</table>
<img alt="funnel chart" src="{{ d.chart }}">
<h3>Reject reasons</h3>
{% if d.reasons %}<table id="reject-table"><tr><th>reason</th><th>rows</th></tr>
{% for r in d.reasons %}<tr data-reason="{{ r.reason }}"><td>{{ r.reason }}</td><td class="n" data-count="{{ r.count }}">{{ r.count|fmt }}</td></tr>{% endfor %}
</table><img alt="reject reasons chart" src="{{ d.reason_chart }}">{% else %}<p>no rows were rejected</p>{% endif %}
{% if d.selection %}<p id="selection-summary">selection (candidates/_summary.json): {% for k, v in d.selection.items() %}{{ k }} <b>{{ v|fmt }}</b>{% if not loop.last %}; {% endif %}{% endfor %}</p>{% endif %}
{% if d.export_info %}<p id="export-summary">export (export/lineage.json): {% for k, v in d.export_info.items() %}{{ k }} <b>{{ v|fmt }}</b>{% if not loop.last %}; {% endif %}{% endfor %}</p>{% endif %}
{% if d.skipped_filters %}<p>filters not run: {% for k, v in d.skipped_filters.items() %}<b>{{ k }}</b> ({{ v }}){% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
{% if meta.config_toml %}<details><summary>config recorded in the run</summary><pre>{{ meta.config_toml }}</pre></details>{% endif %}

{% elif s.id == "histograms" %}
<p>All scored rows; dashed red lines are the thresholds of the config recorded in the run.</p>
<div class="grid">{% for c in d.charts %}<figure data-hist="{{ c.column }}" data-n="{{ c.n }}"{% if c.meaningless %} data-meaningless="true"{% endif %}>
<img alt="{{ c.title }} histogram" src="{{ c.uri }}"><figcaption>{{ c.n|fmt }} values{% if c.thresholds %}; {{ c.thresholds|join(', ') }}{% endif %}</figcaption></figure>{% endfor %}</div>

{% elif s.id == "concepts" %}
<img alt="concept mix chart" src="{{ d.chart }}">
<table id="concept-table"><tr><th>concept</th>{% for name in d.series %}<th>{{ name }}</th>{% endfor %}</tr>
{% for row in d.table %}<tr data-concept="{{ row.concept }}"><td>{{ row.concept }}</td>{% for n in row.counts %}<td class="n">{{ n|fmt }}</td>{% endfor %}</tr>{% endfor %}</table>

{% elif s.id == "thumbnails" %}
{% for sh in d.sheets %}<h3>{{ sh.title }}</h3><div class="sheet" data-sheet="{{ sh.id }}">
{% for it in sh.thumbs %}<div class="thumb" title="{{ it.caption }}">{% if it.uri %}<img alt="{{ it.key }}" src="{{ it.uri }}">{% else %}<div class="ph">unreadable</div>{% endif %}
<div>{{ it.key }}</div>{% if it.detail %}<div>{{ it.detail }}</div>{% endif %}</div>{% endfor %}</div>{% endfor %}

{% elif s.id == "review" %}
{% for p in d.passes %}<h3>Pass {{ p.pass }}{% if not p.complete %} (in progress){% endif %}</h3>
{% if p.simulated %}<div class="sim" data-simulated="pass{{ p.pass }}">SIMULATION: pass {{ p.pass }} annotations were generated by a script, not by people.</div>{% endif %}
<table data-review-pass="{{ p.pass }}"><tr><td>decisions</td><td class="n" data-field="decisions">{{ p.decisions|fmt }}</td></tr>
<tr><td>kept</td><td class="n" data-field="kept">{{ p.kept|fmt }}</td></tr>
<tr><td>keep rate</td><td class="n">{{ p.keep_rate|pct if p.keep_rate is defined else "–" }}</td></tr>
<tr><td>annotations</td><td class="n" data-field="annotations">{{ p.annotations|fmt }}</td></tr>
{% if p.tasks_complete is defined %}<tr><td>tasks with all their annotations</td><td class="n" data-field="complete">{{ p.tasks_complete|fmt }} of {{ p.decisions|fmt }}</td></tr>{% endif %}
{% if p.tasks_annotated is defined %}<tr><td>tasks annotated</td><td class="n">{{ p.tasks_annotated|fmt }}</td></tr>{% endif %}
</table>
{% if p.chart is defined %}<img alt="annotations per annotator" src="{{ p.chart }}">{% endif %}
{% for name, q in p.quality.items() %}{% set parts = q|split_tables %}<h4>{{ name }}.json</h4><table data-quality="{{ name }}">
{% for k, v in parts[0] %}<tr><td>{{ k }}</td><td class="n">{{ v|fmt }}</td></tr>{% endfor %}</table>
{% for tname, recs in parts[1].items() %}<h4>{{ tname }}</h4><table data-quality-table="{{ tname }}"><tr>{% for c in recs[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in recs %}<tr>{% for c in recs[0] %}<td class="n">{{ r.get(c)|fmt }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}{% endfor %}
{% endfor %}

{% elif s.id == "training" %}
<div class="grid">{% for c in d.charts %}<img alt="{{ c.title }}" src="{{ c.uri }}">{% endfor %}</div>
<p>{{ d.records }} metric records; last: {% for k, v in d.last.items() %}<b>{{ k }}</b> {{ v|fmt }}{% if not loop.last %}, {% endif %}{% endfor %}</p>
{% for name, st in d.state.items() %}<details><summary>{{ name }}.json</summary><table>{% for k, v in st|flatten %}<tr><td>{{ k }}</td><td>{{ v|fmt }}</td></tr>{% endfor %}</table></details>{% endfor %}

{% elif s.id == "eval" %}
{% if d.auto %}{% set a = d.auto %}<h3>Automatic pairwise scores (tuned vs base)</h3>
{% for n in a.notes or [] %}<p class="{{ 'warn' if a.meaningless else 'missing' }}">{{ n }}</p>{% endfor %}
<p id="eval-summary" data-pairs="{{ a.pairs }}">{{ a.pairs|fmt }} pairs: {{ a.prompts|fmt }} prompts × {{ (a.seeds or [])|length }} seeds, {{ a.steps }} steps; judges: CLIP {{ a.judges.clip_model if a.judges is defined else "?" }}{% if a.judges is defined and a.judges.aesthetic_head %}, aesthetic head {{ a.judges.aesthetic_head }}{% endif %}; tie margins {% for k, v in (a.tie_margin or {}).items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}; {{ a.ci }} intervals.</p>
{% for metric, t in (a.tables or {}).items() %}<h4>{{ metric }}</h4>
<table data-eval-metric="{{ metric }}"><tr><th>category</th><th>n</th><th>win</th><th>tie</th><th>loss</th><th>win 95% CI</th><th>loss 95% CI</th></tr>
{% for cat, r in t|all_first %}<tr data-category="{{ cat }}"><td>{{ cat }}</td><td class="n">{{ r.n }}</td><td class="n">{{ r.win|pct }}</td><td class="n">{{ r.tie|pct }}</td><td class="n">{{ r.loss|pct }}</td>
<td class="n">{{ r.win_ci[0]|pct }}–{{ r.win_ci[1]|pct }}</td><td class="n">{{ r.loss_ci[0]|pct }}–{{ r.loss_ci[1]|pct }}</td></tr>{% endfor %}</table>{% endfor %}{% endif %}
{% if d.examples %}<h4>Examples (same prompt, same seed)</h4><table id="eval-examples"><tr><th>category</th><th>prompt</th><th>base</th><th>tuned</th><th>CLIP score base → tuned</th></tr>
{% for e in d.examples %}<tr data-pair="{{ e.pair_id }}"><td>{{ e.category }}</td><td>{{ e.prompt }}</td>
<td>{% if e.base_uri %}<img alt="base {{ e.pair_id }}" src="{{ e.base_uri }}" width="112">{% endif %}</td>
<td>{% if e.tuned_uri %}<img alt="tuned {{ e.pair_id }}" src="{{ e.tuned_uri }}" width="112">{% endif %}</td>
<td class="n">{{ e.base_clip_score|fmt }} → {{ e.tuned_clip_score|fmt }} ({{ e.clip_score_outcome }})</td></tr>{% endfor %}</table>{% endif %}
{% if d.human %}{% set h = d.human %}<h3>Human A/B preference (Label Studio)</h3>
{% for n in h.notes or [] %}<p class="missing">{{ n }}</p>{% endfor %}
{% for q, t in (h.tables or {}).items() %}{% set tk = (h.tasks or {}).get(q, {}) %}<h4>{{ q }}{% if tk %}: {{ tk.with_votes }} of {{ tk.pushed }} tasks have votes, {{ tk.complete }} complete ({{ tk.raters_wanted }} raters wanted, {{ tk.votes }} votes){% endif %}</h4>
<table data-human-question="{{ q }}"><tr><th>category</th><th>tasks</th><th>win</th><th>tie</th><th>loss</th><th>win 95% CI</th><th>loss 95% CI</th></tr>
{% for cat, r in t|all_first %}<tr data-category="{{ cat }}"><td>{{ cat }}</td><td class="n">{{ r.n }}</td><td class="n">{{ r.win|pct }}</td><td class="n">{{ r.tie|pct }}</td><td class="n">{{ r.loss|pct }}</td>
<td class="n">{{ r.win_ci[0]|pct }}–{{ r.win_ci[1]|pct }}</td><td class="n">{{ r.loss_ci[0]|pct }}–{{ r.loss_ci[1]|pct }}</td></tr>{% endfor %}</table>{% endfor %}{% endif %}
{% endif %}
{% endif %}
</section>
{% endfor %}
</body></html>
"""
