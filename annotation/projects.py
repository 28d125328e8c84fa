"""One Label Studio project per pass per run, found again on rerun by a marker in its description."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from photogenic.pipeline.core.config.review import PassConfig
from photogenic.annotation.lsclient import Client, LabelStudioError
from photogenic.pipeline.core.runio import stable_id, write_json_atomic

RATINGS = ("composition", "lighting", "colour", "subject", "background")
MARKER_RE = re.compile(r"\[photogenic run=([0-9a-f]{32}) pass=(\d)\]")


def review_dir(run: Path) -> Path:
    return Path(run) / "review"


def pass_dir(run: Path, n: int) -> Path:
    return review_dir(run) / f"pass{n}"


def run_id(run: Path) -> str:
    """A stable id for a run directory (created once), so two runs never share a project."""
    return stable_id(review_dir(run) / "run_id")


def label_config(n: int) -> str:
    return resources.files("photogenic.annotation").joinpath(f"configs/pass{n}.xml").read_text()


def instructions(n: int) -> str:
    xml = label_config(n)
    m = re.search(r'<Text name="instructions" value="([^"]*)"', xml)
    return m.group(1) if m else ""


def marker(rid: str, n: int) -> str:
    return f"[photogenic run={rid} pass={n}]"


def _title(run: Path, rid: str, n: int) -> str:
    # Label Studio caps titles at 50 characters.
    name = Path(run).resolve().name[:24]
    return f"Photogenic pass {n} {name} {rid[:6]}"


def find_project(client: Client, run: Path, n: int) -> dict | None:
    mark = marker(run_id(run), n)
    for project in client.projects():
        if mark in (project.get("description") or ""):
            return project
    return None


def ensure_project(client: Client, run: Path, n: int, pass_cfg: PassConfig) -> dict:
    """The pass's project, created with its labeling config and overlap settings if missing."""
    rid = run_id(run)
    project = find_project(client, run, n)
    settings = {
        "maximum_annotations": pass_cfg.overlap_annotators,
        "overlap_cohort_percentage": int(round(pass_cfg.overlap_fraction * 100)),
        "show_overlap_first": pass_cfg.overlap_fraction < 1.0,
    }
    if project is None:
        project = client.post("/api/projects/", json={
            "title": _title(run, rid, n),
            "description": f"Photogenic review pass {n} of {Path(run).resolve()} {marker(rid, n)}",
            "label_config": label_config(n),
            "expert_instruction": f"<p>{instructions(n)}</p>",
            "show_instruction": True,
            "show_skip_button": True,
            "enable_empty_annotation": False,
            "sampling": "Uniform sampling" if n == 1 else "Sequential sampling",
            **settings,
        })
    elif any(project.get(k) != v for k, v in settings.items()):
        project = client.patch(f"/api/projects/{project['id']}/", json=settings)
    _record(run, n, project)
    return project


def _record(run: Path, n: int, project: dict) -> None:
    write_json_atomic({"project_id": project["id"], "title": project["title"],
                       "run_id": run_id(run)}, pass_dir(run, n) / "project.json")


def ensure_local_storage(client: Client, project_id: int, path: Path) -> None:
    """A local-files import storage over the run's media link (needed for files to be served)."""
    existing = client.get("/api/storages/localfiles/", params={"project": project_id})
    if any(Path(s.get("path", "")) == path for s in existing or []):
        return
    try:
        client.post("/api/storages/localfiles/", json={
            "project": project_id, "path": str(path), "title": "photogenic review media",
            "use_blob_urls": True, "regex_filter": r".*\.jpg$",
        })
    except LabelStudioError as err:
        raise LabelStudioError(f"cannot add local-files storage {path}: {err}. The Label Studio "
                               "server must run with LOCAL_FILES_SERVING_ENABLED=true and "
                               "LOCAL_FILES_DOCUMENT_ROOT set to a parent of this path") from None
