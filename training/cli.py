"""`photogenic train`: a thin CLI over `photogenic.training.trainer` (also runs under `accelerate launch`).

    photogenic train --data RUN/export --base-model BASE --out RUN/model [--max-steps N]
                     [--resume] [--config FILE] [--state-dir DIR]
    photogenic train --make-tiny-base DIR
    accelerate launch --multi_gpu --num_processes 8 -m photogenic.training.cli --data ... --out ...
    torchrun --nproc_per_node 2 -m photogenic.training.cli ...   (several CPU processes, gloo)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click


def _train_config(config_path: str | None, out: Path, resume: bool, max_steps: int | None):
    from photogenic.pipeline.core.config import load_config
    from photogenic.pipeline.core.config.training import TrainConfig
    from photogenic.training.trainer import STATE

    saved = out / STATE / "run.json"
    if resume and config_path is None and saved.exists():
        # A resume continues the run as it was configured, not with today's defaults.
        config = TrainConfig.model_validate(json.loads(saved.read_text())["config"])
    else:
        config = load_config(config_path).train
    if max_steps is not None:
        config = config.model_copy(update={"max_steps": max_steps})
    return config


@click.command("train")
@click.option("--data", "data_dir",
              help="Export folder (RUN/export) or an imagefolder with metadata.jsonl; a path or a URL.")
@click.option("--base-model", type=click.Path(file_okay=False),
              help="Local diffusers pipeline directory to fine-tune.")
@click.option("--out", "out_dir",
              help="Output: becomes a diffusers pipeline (+ the run's records in OUT/training_state/). "
                   "A path or a URL.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Override [train].max_steps.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="Checkpoints, latent cache and tracker logs (never inside --out); default: "
                   "OUT/../training_state/OUT-NAME, or on --resume where the run put them.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--make-tiny-base", "tiny_dir", type=click.Path(file_okay=False),
              help="Only write a tiny random-weight diffusers base model to this folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_cmd(data_dir, base_model, out_dir, max_steps, resume, state_dir, config_path, tiny_dir,
              quiet) -> None:
    """Quality-tune a latent-diffusion UNet on the curated export (Emu recipe, early stopping)."""
    from photogenic.pipeline.core.config import ConfigError

    if tiny_dir:
        from photogenic.training.tiny import make_tiny_base

        click.echo(f"tiny random-weight base model: {make_tiny_base(tiny_dir)}")
        return
    missing = [n for n, v in (("--data", data_dir), ("--base-model", base_model),
                              ("--out", out_dir)) if not v]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or use --make-tiny-base DIR)")
    from photogenic.training.trainer import TrainError, train

    from photogenic.training.remote import local_export, local_output, publish_output

    try:
        work = local_output(out_dir)  # a URL --out trains in a local work folder, then uploads
        config = _train_config(config_path, work, resume, max_steps)
        result = train(local_export(data_dir), base_model, work, config, resume=resume,
                       progress=not quiet, state_dir=state_dir)
        if os.environ.get("RANK", "0") == "0":
            publish_output(work, out_dir)
    except (TrainError, ConfigError, OSError) as err:
        raise click.ClickException(str(err)) from None
    if os.environ.get("RANK", "0") != "0":  # one summary per run, not per process
        return
    how = "stopped early" if result.stopped_early else "reached max steps"
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.5f}"
    click.echo(f"{how} at step {result.steps}; best step {result.best_step} "
               f"(validation loss {best}); model in {out_dir}")


if __name__ == "__main__":
    train_cmd()
