"""Config section `[review]`: the Label Studio server and the review passes."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from photogenic.pipeline.core.config.base import Section


class PassConfig(Section):
    """How one review pass is laid out in Label Studio and how its decisions are made."""

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


def _pass1() -> PassConfig:
    return PassConfig(overlap_annotators=2, overlap_fraction=0.1, rule="any")


def _pass2() -> PassConfig:
    return PassConfig(overlap_annotators=3, overlap_fraction=1.0, rule="majority", min_mean_rating=3.5)


class ReviewConfig(Section):
    url: str | None = None  # None: the local server started by `photogenic review server start`
    port: int = 8089
    data_dir: str | None = None  # None: .cache/label-studio under the repository
    # Label Studio's own virtualenv (it pins many packages, so it never shares `.venv`).
    venv: str | None = None  # None: .venv-ls under the repository
    label_studio_version: str = "1.23.2"
    admin_email: str = "admin@photogenic.local"
    start_timeout_s: float = 600.0  # first start runs migrations; slow on a loaded 2-core box
    # Images are materialised once under RUN/review/media and served by local-files storage.
    media_max_side: int = Field(1024, ge=64)
    # Folder Label Studio serves local files from; run media folders are linked into it.
    # None: DATA_DIR/media-root for the local server. With --url it must be set, and that folder
    # must be the same path on the Label Studio host (a shared mount).
    local_files_root: str | None = None
    import_batch_size: int = Field(1000, ge=1)
    max_retries: int = Field(8, ge=0)
    backoff_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(20.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    pass1: PassConfig = Field(default_factory=_pass1)
    pass2: PassConfig = Field(default_factory=_pass2)

    def for_pass(self, n: int) -> PassConfig:
        if n not in (1, 2):
            raise ValueError(f"review pass must be 1 or 2, got {n}")
        return self.pass1 if n == 1 else self.pass2
