"""RunDir: where every stage of one run keeps its output. The one place run paths are spelled.

    RUN/scores/            filter: part-*.parquet, _funnel.json, _stats/, _summary.json, _SUCCESS
    RUN/embeddings/        filter --save-embeddings: part-*.parquet
    RUN/candidates/        select: part-*.parquet, _dropped/, _summary.json, _SUCCESS
    RUN/review/NAME/       review pass NAME: decisions.parquet, annotations.parquet, ...
    RUN/review/media/      images materialised for Label Studio
    RUN/export/            export: webdataset/, imagefolder/, manifest.parquet, lineage.json
    RUN/model/, RUN/eval/, RUN/report/
    RUN/training_state/model/  what resuming the training of RUN/model needs (not the model)

Stages take a RunDir (or a path, through `RunDir.of`) and ask it for paths; nothing else joins
run-relative string literals.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from photogenic.pipeline.core.storage import as_path

SUMMARY = "_summary.json"
DROPPED = "_dropped"  # select's audit table of rows not selected, inside candidates/
SELECTED_PART = "part-00000.parquet"  # select's one file of candidate rows


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, run: "str | Path | RunDir") -> "RunDir":
        return run if isinstance(run, RunDir) else cls(as_path(run))  # a local path or a URL

    # -- filter ------------------------------------------------------------------------------
    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def funnel(self) -> Path:
        return self.scores / "_funnel.json"

    @property
    def shard_stats(self) -> Path:
        return self.scores / "_stats"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    # -- select ------------------------------------------------------------------------------
    @property
    def candidates(self) -> Path:
        return self.root / "candidates"

    @property
    def dropped(self) -> Path:
        return self.candidates / DROPPED

    @property
    def select_scratch(self) -> Path:
        """DuckDB's spill folder while select runs; only ever exists under a build name."""
        return self.root / "select-scratch"

    # -- review ------------------------------------------------------------------------------
    @property
    def review_root(self) -> Path:
        return self.root / "review"

    @property
    def media(self) -> Path:
        return self.review_root / "media"

    def review(self, pass_name: str) -> Path:
        return self.review_root / pass_name

    def decisions(self, pass_name: str) -> Path:
        return self.review(pass_name) / "decisions.parquet"

    def annotations(self, pass_name: str) -> Path:
        return self.review(pass_name) / "annotations.parquet"

    # -- export, train, eval, report ---------------------------------------------------------
    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def stage_dir(self, stage: str) -> Path:
        """The output folder of `stage`: scores, candidates, export, or a review pass name."""
        fixed = {"scores": self.scores, "candidates": self.candidates, "export": self.export}
        return fixed.get(stage) or self.review(stage)

    @staticmethod
    def summary(directory: Path) -> Path:
        return as_path(directory) / SUMMARY

    def __fspath__(self) -> str:
        return str(self.root)


@dataclass(frozen=True)
class ExportDir:
    """An export folder (RUN/export, or any --out): the formats training and eval read."""

    root: Path

    @property
    def webdataset(self) -> Path:
        return self.root / "webdataset"

    @property
    def imagefolder(self) -> Path:
        return self.root / "imagefolder"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def lineage(self) -> Path:
        return self.root / "lineage.json"


TRAINING_STATE = "training_state"
METADATA = "metadata.jsonl"  # an imagefolder split's captions and keys, one JSON line per image


@dataclass(frozen=True)
class ModelDir:
    """A diffusers pipeline folder (RUN/model, a base model). For a model this project trained it
    also holds the run's records in `training_state/` (run.json, metrics.jsonl, best.json,
    result.json: small files that ship with the model; eval and the report read them) and, while
    training, the best weights so far (best-N/, removed once the pipeline is written). What only a
    resume needs (accelerate checkpoints with optimizer state, the latent cache, tracker logs)
    lives outside it, in a TrainingStateDir (`state`), so shipping the model never ships that."""

    root: Path

    @property
    def model_index(self) -> Path:
        return self.root / "model_index.json"

    @property
    def unet(self) -> Path:
        return self.root / "unet"

    @property
    def training_state(self) -> Path:
        """The run's records (they ship with the model)."""
        return self.root / TRAINING_STATE

    @property
    def run_info(self) -> Path:
        return self.training_state / "run.json"

    @property
    def metrics(self) -> Path:
        return self.training_state / "metrics.jsonl"

    def best_weights(self, step: int) -> Path:
        return self.training_state / f"best-{step:06d}"

    @property
    def best(self) -> Path:
        """Which best-N folder holds the best weights."""
        return self.training_state / "best.json"

    @property
    def result(self) -> Path:
        return self.training_state / "result.json"

    @property
    def state(self) -> "TrainingStateDir":
        """Where the trainer keeps what a resume needs, by default: beside the model, never in
        it (RUN/model -> RUN/training_state/model)."""
        root = self.root if self.root.name else Path(self.root).resolve()
        return TrainingStateDir(root.parent / TRAINING_STATE / root.name)

    # The resume state's paths, for the default state folder.
    @property
    def latent_cache(self) -> Path:
        return self.state.latent_cache

    @property
    def checkpoints(self) -> Path:
        return self.state.checkpoints

    def checkpoint(self, step: int) -> Path:
        return self.state.checkpoint(step)

    @property
    def latest(self) -> Path:
        return self.state.latest


@dataclass(frozen=True)
class TrainingStateDir:
    """What a training run needs to resume, outside the model folder (training/trainer.py):

        checkpoints/step-N/   accelerate save_state: model, optimizer, RNG, scaler, EMA, LR
                              scheduler and the trainer's own state (FSDP/DeepSpeed-aware)
        latest.json           which checkpoint to resume from (written after the checkpoint)
        cache/                latents and caption embeddings, encoded once
        logs/                 tracker logs (tensorboard)
    """

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    @property
    def latest(self) -> Path:
        """Which checkpoint to resume from."""
        return self.root / "latest.json"

    @property
    def latent_cache(self) -> Path:
        return self.root / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@dataclass(frozen=True)
class EvalDir:
    """An eval output folder (RUN/eval, or any --out)."""

    root: Path

    def images(self, tag: str) -> Path:
        return self.root / "images" / tag

    @property
    def pairs(self) -> Path:
        return self.root / "pairs.parquet"

    @property
    def results(self) -> Path:
        return self.root / "results.json"
