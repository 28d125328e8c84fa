"""One Label Studio project per review pass per run, found again on rerun by a marker in its
description (a `TaskSet`)."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from photogenic.annotation.lsclient import Client, LabelStudioError
from photogenic.annotation.tasksets import ImportPolicy, TaskSet
from photogenic.pipeline.core.config.review import (CANDIDATES, PassConfig, ReviewConfig, pass_label,
                                                    pass_token)
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.core.runio import stable_id, write_json_atomic
from photogenic.pipeline.core.storage import location

RATINGS = ("composition", "lighting", "colour", "subject", "background")


def run_id(run: Path) -> str:
    """A stable id for a run directory (created once), so two runs never share a project."""
    return stable_id(RunDir.of(run).review_root / "run_id")


def label_config(p: PassConfig) -> str:
    """The pass's Label Studio XML: a built-in one (annotation/configs/; "keep" in its grid form
    for grid passes) or the configured file (for a grid: a Repeater over $images, keep_N toggles)."""
    path = p.label_config_path
    if path is None:
        name = f"{p.label_config}_grid" if is_grid(p) else p.label_config
        return resources.files("photogenic.annotation").joinpath(f"configs/{name}.xml").read_text()
    try:
        return path.read_text()
    except OSError as err:
        raise LabelStudioError(f"review pass '{p.name}': label_config {path} cannot be read: {err}") from None


def is_grid(p: PassConfig) -> bool:
    """Whether the pass's tasks show several images (a grid), each with its own keep toggle."""
    return (p.grid_size or 1) > 1


def has_ratings(xml: str) -> bool:
    """Whether a label config asks for the 1-5 ratings (as the built-in "rate" one does)."""
    return any(re.search(rf'<Rating[^>]*name="{name}"', xml) for name in RATINGS)


def instructions(xml: str) -> str:
    m = re.search(r'<Text name="instructions" value="([^"]*)"', xml)
    return m.group(1) if m else ""


def marker(rid: str, name: str) -> str:
    return f"[photogenic run={rid} pass={pass_token(name)}]"


def _title(run: Path, rid: str, name: str) -> str:
    # Label Studio caps titles at 50 characters.
    return f"Photogenic {pass_label(name)} {_run_name(run)[:24]} {rid[:6]}"[:50]


def _run_name(run) -> str:
    return location(RunDir.of(run).root).rstrip("/").rsplit("/", 1)[-1]


def taskset(client: Client, run: Path, name: str, config: ReviewConfig | None = None) -> TaskSet:
    """The pass's task set (its ledger under RUN/review/NAME/ledger)."""
    policy = ImportPolicy.from_config(config) if config is not None else None
    return TaskSet(client, marker(run_id(run), name), key_field="key",
                   ledger_dir=RunDir.of(run).review(name) / "ledger", policy=policy)


def find_project(client: Client, run: Path, name: str) -> dict | None:
    return taskset(client, run, name).find()


def ensure_project(tasks: TaskSet, run: Path, p: PassConfig) -> dict:
    """The pass's project, created with its labeling config; label config and overlap settings
    are kept as configured."""
    xml = label_config(p)
    settings = {
        "label_config": xml,
        "maximum_annotations": p.overlap_annotators,
        "overlap_cohort_percentage": int(round(p.overlap_fraction * 100)),
        "show_overlap_first": p.overlap_fraction < 1.0,
    }
    rid = run_id(run)
    project = tasks.ensure({
        "title": _title(run, rid, p.name),
        "description": f"Photogenic review {pass_label(p.name)} of {location(RunDir.of(run).root)} {marker(rid, p.name)}",
        "expert_instruction": f"<p>{instructions(xml)}</p>",
        "show_instruction": True,
        "show_skip_button": True,
        # A grid with nothing ticked is a valid answer: all its images dropped.
        "enable_empty_annotation": is_grid(p),
        "sampling": "Uniform sampling" if p.input == CANDIDATES else "Sequential sampling",
    }, settings)
    write_json_atomic({"project_id": project["id"], "title": project["title"], "run_id": rid},
                      RunDir.of(run).review(p.name) / "project.json")
    return project
