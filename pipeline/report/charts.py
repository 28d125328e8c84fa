"""Every picture on the report page, made from the plain data of gather.py: matplotlib figures as
PNG data URIs, and thumbnails of images as small JPEG data URIs (the page stays self-contained).

`draw(section)` gives a section's pictures as a dict the templates read as `s.charts`.
"""
from __future__ import annotations

import base64
import io
import logging
from typing import Any, Callable

from photogenic.pipeline.report.gather import Section

log = logging.getLogger(__name__)

THUMB_PX = 112


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


# --- per section ---------------------------------------------------------------------------------


def funnel_charts(data: dict[str, Any]) -> dict[str, Any]:
    shown = [r for r in data["stages"] if r["count"] is not None]
    reasons = data["reasons"]
    return {
        "stages": bar_chart([r["label"] for r in shown], [r["count"] for r in shown], "rows at each stage"),
        "reasons": bar_chart([r["reason"] for r in reasons], [r["count"] for r in reasons],
                             "rejected rows by reason (first failing filter)") if reasons else None,
    }


def histogram_uri(hist: dict[str, Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.stairs(hist["counts"], hist["edges"], fill=True, color="#8da0cb")
    for line in hist["thresholds"]:
        ax.axvline(float(line["value"]), color="#d62728", linestyle="--", linewidth=1.5)
    bad = hist["meaningless"]
    ax.set_title(hist["title"] + ("  (MEANINGLESS: random model)" if bad else ""), fontsize=9,
                 color="#d62728" if bad else "black")
    ax.set_ylabel("rows", fontsize=8)
    ax.tick_params(labelsize=7)
    return figure_uri(fig)


def histogram_charts(data: dict[str, Any]) -> dict[str, Any]:
    return {h["column"]: histogram_uri(h) for h in data["histograms"]}


def concept_charts(data: dict[str, Any]) -> dict[str, Any]:
    series, concepts = data["series"], data["concepts"]
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
    return {"mix": figure_uri(fig)}


def thumbnail_charts(data: dict[str, Any]) -> dict[str, Any]:
    return {"thumbs": {sheet["id"]: {it["key"]: thumbnail_uri(it["source"]) for it in sheet["images"]}
                       for sheet in data["sheets"]}}


def review_charts(data: dict[str, Any]) -> dict[str, Any]:
    return {"annotators": {
        p["name"]: bar_chart([a["annotator"] for a in p["per_annotator"]],
                             [a["annotations"] for a in p["per_annotator"]],
                             f"{p['label']}: annotations per annotator", "annotations")
        for p in data["passes"] if p.get("per_annotator")}}


def training_charts(data: dict[str, Any]) -> dict[str, Any]:
    plt = _plt()
    charts = []
    for title, lines in data["series"].items():
        fig, ax = plt.subplots(figsize=(6, 2.8))
        for name, pts in lines.items():
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None, label=name)
        ax.set_xlabel(data["step_key"] or "record")
        ax.set_title(title)
        ax.legend(fontsize=8)
        charts.append({"title": title, "uri": figure_uri(fig)})
    return {"metrics": charts}


def eval_charts(data: dict[str, Any]) -> dict[str, Any]:
    return {"examples": {e["pair_id"]: {"base": thumbnail_uri(e["base_source"]),
                                        "tuned": thumbnail_uri(e["tuned_source"])}
                         for e in data["examples"]}}


def audit_charts(data: dict[str, Any]) -> dict[str, Any]:
    """Per threshold: the estimated false-reject rate (with its interval) and the share of scored
    rows rejected, over the threshold's range; the configured and suggested values marked."""
    plt = _plt()
    out = {}
    for c in data["charted"]:
        pts = [p for p in c["points"] if p.get("false_reject_rate") is not None]
        fig, ax = plt.subplots(figsize=(6, 2.8))
        xs = [p["threshold"] for p in c["points"]]
        ax.plot(xs, [100 * p["reject_share"] for p in c["points"]], color="#888", label="rows rejected %")
        if pts:
            ax.plot([p["threshold"] for p in pts], [100 * p["false_reject_rate"] for p in pts], marker=".",
                    color="#c44e52", label="est. false-reject rate %")
            ax.fill_between([p["threshold"] for p in pts], [100 * p["ci"][0] for p in pts],
                            [100 * p["ci"][1] for p in pts], color="#c44e52", alpha=0.15)
        ax.axhline(100 * data["target_false_reject"], color="#c44e52", linestyle=":", linewidth=1)
        ax.axvline(c["current"], color="black", linestyle="--", linewidth=1, label=f"now {c['current']:g}")
        if c.get("suggested"):
            ax.axvline(c["suggested"]["threshold"], color="#55a868", linewidth=1.5,
                       label=f"suggested {c['suggested']['threshold']:g}")
        ax.set_xlabel(f"[filters.{c['filter']}] {c['field']} ({c['direction']})")
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
        out[f"{c['filter']}.{c['field']}"] = figure_uri(fig)
    return {"curves": out}


CHARTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "audit": audit_charts,
    "funnel": funnel_charts, "histograms": histogram_charts, "concepts": concept_charts,
    "thumbnails": thumbnail_charts, "review": review_charts, "training": training_charts,
    "eval": eval_charts,
}


def draw(section: Section) -> dict[str, Any]:
    """The pictures of `section` (none for a section that is absent or has no charts)."""
    make = CHARTS.get(section.id)
    return make(section.data) if make and section.present else {}
