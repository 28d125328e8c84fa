"""`photogenic report --run RUN`: one self-contained HTML page that shows what every stage did.

Three steps: gather.py reads the run into plain data (every number from the run's own files),
charts.py draws its figures and thumbnails (embedded as data URIs, so `RUN/report/index.html`
can be mailed or opened anywhere), and the Jinja templates in templates/ lay out the page. A
section whose stage has not run says so instead of failing, and a section whose files cannot be
read says why.
"""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, Callable

import click

from photogenic.pipeline.core.runio import mark_success, remove_stale_tmp, write_bytes_atomic
from photogenic.pipeline.core.storage import as_path
from photogenic.pipeline.report.charts import draw
from photogenic.pipeline.report.gather import (
    SECTIONS,
    THUMBS_PER_SHEET,
    Context,
    ReportError,
    Run,
    Section,
    context,
)

__all__ = ["ReportError", "build_report", "report_cmd"]

log = logging.getLogger(__name__)


def _safe(builder: Callable[[Run, Context], Section | list[Section]], run: Run, ctx: Context) -> list[Section]:
    try:
        built = builder(run, ctx)
        sections = built if isinstance(built, list) else [built]
        for section in sections:
            section.charts = draw(section)
        return sections
    except Exception as err:  # one unreadable stage output must not hide the others
        log.exception("report section %s failed", builder.__name__)
        name = builder.__name__.removesuffix("_section")
        return [Section(name, name.capitalize(), present=False, error=f"{type(err).__name__}: {err}")]


# --- page ---------------------------------------------------------------------------------------


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

    env = jinja2.Environment(loader=jinja2.PackageLoader("photogenic.pipeline.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(fmt=_fmt, flatten=_flatten, pct=_pct, split_tables=_split_tables, all_first=_all_first)
    return env.get_template("index.html.j2").render(sections=sections, meta=meta)


def _meta(root: Path, ctx: Context, sections: list[Section]) -> dict[str, Any]:
    return {
        "run": str(root.resolve()),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "meaningless": ctx.meaningless,
        "config_toml": ctx.funnel_json.get("config_toml") or "",
        "simulated": any(p.get("simulated") for s in sections if s.id == "review" and s.present
                         for p in s.data["passes"]),
        "eval_simulated": any(
            (s.data.get("human") or {}).get("simulated") for s in sections if s.id == "eval" and s.present),
        "eval_meaningless": any(
            (s.data.get("auto") or {}).get("meaningless") for s in sections if s.id == "eval" and s.present),
    }


def build_report(run_dir: str | Path, out: str | Path | None = None, thumbs: int = THUMBS_PER_SHEET) -> Path:
    """Write `RUN/report/index.html` (atomically) and return its path."""
    root = as_path(run_dir)
    if not root.exists():
        raise ReportError(f"run directory not found: {root}")
    run = Run(root)
    out_dir = as_path(out) if out else run.dirs.report
    remove_stale_tmp(out_dir)
    ctx = context(run, thumbs)
    sections = [s for builder in SECTIONS for s in _safe(builder, run, ctx)]
    page = render(sections, _meta(root, ctx, sections))
    path = write_bytes_atomic(page.encode(), out_dir / "index.html")
    mark_success(out_dir)
    return path


@click.command("report")
@click.option("--run", "run_dir", required=True, help="Run directory; a path or a URL.")
@click.option("--out", default=None, help="Output folder (default RUN/report); a path or a URL.")
@click.option("--thumbs", type=click.IntRange(0, 64), default=THUMBS_PER_SHEET, show_default=True,
              help="Thumbnails per contact sheet.")
def report_cmd(run_dir: str, out: str | None, thumbs: int) -> None:
    """Write one self-contained HTML page showing the whole funnel of RUN."""
    path = build_report(run_dir, out, thumbs)
    click.echo(f"report: {path}")
