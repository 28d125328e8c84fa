"""Config section `[review]`: the Label Studio server and the review passes.

The passes are data: `[[review.passes]]`, in order, each reviewing the candidates or the keeps of
an earlier pass. The default is Emu's two passes, `pass1` (generalists, keep/drop, recall) and
`pass2` (specialists, keep/drop + ratings, precision). The older tables `[review.pass1]` and
`[review.pass2]` still configure those two default passes.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from photogenic.pipeline.core.config.base import Section

CANDIDATES = "candidates"
# Built-in label configs (annotation/configs/NAME.xml): keep/drop only, or keep/drop + 1-5 ratings.
BUILTIN_LABEL_CONFIGS = ("keep", "rate")
# A pass name is a folder (RUN/review/NAME) and part of SQL view names in the report.
PASS_NAME = r"^[a-z][a-z0-9_]{0,31}$"
RESERVED_NAMES = (CANDIDATES, "media", "run_id", "audit")
DEFAULT_GRID = 16  # images per pass-1 task: 4 x 4 thumbnails, judged at a glance
_NUMBERED = re.compile(r"^pass(\d+)$")


class PassConfig(Section):
    """How one review pass is laid out in Label Studio and how its decisions are made."""

    name: str = Field(pattern=PASS_NAME)
    # "candidates" or the name of an earlier pass (its keeps). None: the previous pass, or the
    # candidates for the first pass.
    input: str | None = None
    # "keep" (keep/drop), "rate" (keep/drop + five 1-5 ratings) or a path to a Label Studio XML
    # with the same control names. None: "keep" for the first pass, "rate" for later ones.
    label_config: str | None = None
    # Images per task: > 1 shows a grid (triage: each image has its own keep toggle; decisions,
    # overlap, gold and the rule stay per image). None: 16 for the first pass, 1 for later ones.
    grid_size: int | None = Field(None, ge=1, le=64)
    # Who answers: names the simulated annotators (sim-GROUP-N). None: "generalist" for the
    # first pass, "specialist" for later ones.
    annotator_group: str | None = Field(None, pattern=PASS_NAME)
    # How many annotators see a task in the overlap cohort (Label Studio's maximum_annotations).
    overlap_annotators: int = Field(2, ge=1)
    # Share of tasks in the overlap cohort (Label Studio's overlap_cohort_percentage / 100).
    overlap_fraction: float = Field(0.1, ge=0.0, le=1.0)
    # Gold (known-answer) tasks: a csv/parquet of keys of this pass with the right answer.
    gold_file: str | None = None  # csv or parquet with columns key, keep (keys of this pass)
    # Gold tasks are shown to this many annotators (set it to the team size: everyone's accuracy).
    gold_annotators: int = Field(3, ge=1)
    # any: keep when any annotator kept (recall); majority: more than half kept (precision).
    rule: Literal["any", "majority"] = "any"
    # With rule "majority": the mean of the 1-5 ratings must also reach this (None: not used).
    min_mean_rating: float | None = None

    @property
    def builtin_label_config(self) -> bool:
        return self.label_config in BUILTIN_LABEL_CONFIGS

    @property
    def label_config_path(self) -> Path | None:
        """The custom XML file, or None for a built-in label config."""
        return None if self.builtin_label_config else Path(self.label_config)


def _default_passes() -> list[dict[str, Any]]:
    return [
        {"name": "pass1", "overlap_annotators": 2, "overlap_fraction": 0.1, "rule": "any"},
        {"name": "pass2", "overlap_annotators": 3, "overlap_fraction": 1.0, "rule": "majority",
         "min_mean_rating": 3.5},
    ]


LEGACY_KEYS = {"pass1": 0, "pass2": 1}


class AuditConfig(Section):
    """`[review.audit]`: the reject audit (`photogenic review audit`), a seeded random sample of
    each reject reason, and of passed rows as a control, asked "should this image have been kept?"."""

    per_reason: int = Field(30, ge=1)  # images sampled per reject reason (all of them when fewer)
    control: int = Field(30, ge=0)  # passed images sampled as a control
    seed: int = 0
    annotators: int = Field(1, ge=1)  # answers wanted per image (Label Studio's maximum_annotations)
    # Reasons left out: "unreadable" rows have no image to show.
    skip_reasons: list[str] = Field(default_factory=lambda: ["unreadable"])
    target_false_reject: float = Field(0.05, gt=0, lt=1)  # the threshold suggestions aim at this
    confidence: float = Field(0.95, gt=0, lt=1)  # of the Wilson intervals
    # A suggested threshold must leave at least this many audited images on its reject side.
    min_support: int = Field(5, ge=1)


class HeadConfig(Section):
    """`[review.head]`: the aesthetic head learnt from each pass's decisions on the saved CLIP
    embeddings (RUN/embeddings), which orders the next pass's tasks."""

    enabled: bool = True  # after each pull, when RUN/embeddings holds the reviewed keys
    epochs: int = Field(200, ge=1)
    # Optimiser steps at most: a 200K-image pass trains in larger batches and fewer epochs
    # (minutes on a CPU), a small one in batches of 64 for `epochs`.
    max_steps: int = Field(1000, ge=1)
    val_fraction: float = Field(0.25, gt=0, lt=1)  # held out for the AUC / correlation
    seed: int = 0
    min_labels: int = Field(20, ge=4)  # fewer decided images than this: no head
    order_next_pass: bool = True  # import the next pass's tasks best-first by the head


class ReviewConfig(Section):
    url: str | None = None  # None: the local server started by `photogenic review server start`
    port: int = 8089
    data_dir: str | None = None  # None: PHOTOGENIC_LS_DATA_DIR, a checkout's .cache/label-studio, else the user data dir (annotation/server.py data_dir)
    # Label Studio's own virtualenv (it pins many packages, so it never shares `.venv`).
    venv: str | None = None  # None: PHOTOGENIC_LS_VENV, a checkout's .venv-ls, else the user cache dir (annotation/server.py venv_dir)
    label_studio_version: str = "1.23.2"
    admin_email: str = "admin@photogenic.local"
    start_timeout_s: float = 600.0  # first start runs migrations; slow on a loaded 2-core box
    # The local server's database: "sqlite" (a file in the data dir) or "postgres" (a PostgreSQL
    # server this project runs, data in DATA_DIR/postgres; for ~10-100K tasks and more).
    # `review server start --db` overrides it; unset, a data dir keeps the one it last ran on.
    db: Literal["sqlite", "postgres"] = "sqlite"
    # Images are materialised once under RUN/review/media and served by local-files storage.
    media_max_side: int = Field(1024, ge=64)
    # Folder Label Studio serves local files from; run media folders are linked into it.
    # None: DATA_DIR/media-root for the local server. With --url it must be set, and that folder
    # must be the same path on the Label Studio host (a shared mount).
    local_files_root: str | None = None
    # Runs on S3 (s3://...): images are materialised under RUN/review/media on the bucket and
    # served through a Label Studio S3 import storage with presigned URLs. The endpoint Label
    # Studio reaches the store at (None: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL of the environment,
    # else AWS itself); credentials always come from the environment, never from config or run files.
    s3_endpoint: str | None = None
    presign_ttl_min: int = Field(60, ge=1, le=10080)
    # Label Studio imports (review push, eval push): tasks per request, and the retries with
    # exponential backoff (backoff_s, doubling, at most backoff_max_s) of every request.
    import_batch_size: int = Field(1000, ge=1)
    max_retries: int = Field(8, ge=0)
    backoff_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(20.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    # The review passes, in order ([[review.passes]]); see the module docstring.
    passes: list[PassConfig] = Field(default_factory=lambda: [PassConfig(**p) for p in _default_passes()],
                                     min_length=1)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy_pass_tables(cls, data: Any) -> Any:
        """[review.pass1] / [review.pass2] (the older form) configure the two default passes."""
        if not isinstance(data, dict) or not any(k in data for k in LEGACY_KEYS):
            return data
        if "passes" in data:
            given = " and ".join(f"[review.{k}]" for k in LEGACY_KEYS if k in data)
            raise ValueError(f"review: {given} and [[review.passes]] both given; use only "
                             "[[review.passes]] (a table per pass, with name = \"pass1\", ...)")
        data = dict(data)
        passes = _default_passes()
        for key, index in LEGACY_KEYS.items():
            table = data.pop(key, None)
            if table is None:
                continue
            if isinstance(table, PassConfig):
                table = table.model_dump(exclude_unset=True)
            if not isinstance(table, dict):
                raise ValueError(f"review.{key} must be a table")
            if "name" in table and table["name"] != key:
                raise ValueError(f"review.{key}.name: the older [review.{key}] table is always "
                                 f"pass '{key}'; name other passes in [[review.passes]]")
            passes[index].update(table)
        data["passes"] = passes
        return data

    @model_validator(mode="after")
    def _resolve_passes(self) -> "ReviewConfig":
        seen: list[str] = []
        for i, p in enumerate(self.passes):
            where = f"review.passes[{i}]"
            if p.name in RESERVED_NAMES:
                raise ValueError(f"{where}.name: '{p.name}' is reserved ({', '.join(RESERVED_NAMES)})")
            if p.name in seen:
                raise ValueError(f"{where}.name: pass name '{p.name}' is used twice")
            names = [p2.name for p2 in self.passes]
            if p.input is None:
                p.input = seen[-1] if seen else CANDIDATES
            elif p.input != CANDIDATES and p.input not in seen:
                why = ("is this pass itself" if p.input == p.name else
                       "comes later in [[review.passes]]" if p.input in names else "is not a pass")
                raise ValueError(f"{where}.input: '{p.input}' {why}; a pass reviews "
                                 f"'{CANDIDATES}' or an earlier pass ({', '.join([CANDIDATES, *seen])})")
            if p.label_config is None:
                p.label_config = "keep" if not seen else "rate"
            elif not p.builtin_label_config and not p.label_config.endswith(".xml"):
                raise ValueError(f"{where}.label_config: '{p.label_config}' is neither a built-in "
                                 f"label config ({', '.join(BUILTIN_LABEL_CONFIGS)}) nor an .xml file")
            if p.annotator_group is None:
                p.annotator_group = "generalist" if not seen else "specialist"
            if p.grid_size is None:
                p.grid_size = DEFAULT_GRID if not seen and p.label_config == "keep" else 1
            if p.grid_size > 1 and p.label_config == "rate":
                raise ValueError(f"{where}.grid_size: a grid ({p.grid_size} images per task) takes "
                                 "keep toggles only; the \"rate\" label config rates one image per "
                                 "task (grid_size = 1)")
            seen.append(p.name)
        return self

    # --- looking passes up ------------------------------------------------------------------

    def pass_names(self) -> list[str]:
        return [p.name for p in self.passes]

    @property
    def last_pass(self) -> PassConfig:
        return self.passes[-1]

    def pass_config(self, ref: str | int) -> PassConfig:
        """A pass by name or by its 1-based position ("2" or 2); errors list the configured names."""
        names = self.pass_names()
        if isinstance(ref, str) and ref in names:
            return self.passes[names.index(ref)]
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            n = int(ref)
            if 1 <= n <= len(self.passes):
                return self.passes[n - 1]
        raise ValueError(f"no review pass {ref!r}; configured passes: "
                         + ", ".join(f"{i} {name}" for i, name in enumerate(names, 1)))

    def pass_index(self, name: str) -> int:
        """0-based position of pass `name` in [[review.passes]]."""
        return self.pass_names().index(self.pass_config(name).name)


def pass_number(review: ReviewConfig, name: str) -> int:
    """1-based position of a pass: the number in its task data, annotation rows and `--pass N`."""
    return review.pass_index(name) + 1


def pass_token(name: str) -> str:
    """How a pass is spelled in Label Studio markers and titles: "1" for pass1 (as before
    passes were configurable, so existing projects are found again), else its name."""
    m = _NUMBERED.match(name)
    return m.group(1) if m else name


def pass_label(name: str) -> str:
    """A pass for people: "pass 1" for pass1, else its name."""
    m = _NUMBERED.match(name)
    return f"pass {m.group(1)}" if m else name


def export_sources(review: ReviewConfig) -> list[str]:
    """What `export --from` accepts: the candidates or any configured pass."""
    return [CANDIDATES, *review.pass_names()]
