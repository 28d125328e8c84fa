"""Core commands: config, sample-pool, filter."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from photogenic.pipeline.core.config import ConfigError, defaults_toml, load_config
from photogenic.pipeline.core.layout import RunDir

console = Console(stderr=False)


def load_or_exit(path: str | None):
    try:
        return load_config(path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


@click.command("config")
@click.option("--print-defaults", is_flag=True, help="Print the full default config as TOML.")
@click.option("--check", "check_path", type=click.Path(), help="Validate a config file.")
def config_cmd(print_defaults: bool, check_path: str | None) -> None:
    """Print the default config or validate one."""
    if check_path:
        load_or_exit(check_path)
        click.echo(f"{check_path}: ok")
    if print_defaults or not check_path:
        click.echo(defaults_toml(), nl=False)


@click.command("sample-pool")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
@click.option("--clean", default=400, show_default=True, help="Clean photos to derive.")
@click.option("--shard-size", default=200, show_default=True)
def sample_pool_cmd(out: str, seed: int, clean: int, shard_size: int) -> None:
    """Build the sample pool (real photos + planted defects + ground_truth.json) offline."""
    from photogenic.pipeline.sample.pool import build_sample_pool

    truth = build_sample_pool(Path(out), seed=seed, n_clean=clean, shard_size=shard_size)
    click.echo(f"sample pool: {truth['rows']} samples in {truth['shards']} shards at {out}")


def print_funnel(funnel: dict) -> None:
    table = Table(title="filter funnel")
    table.add_column("stage")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    n = funnel["rows_in"] or 1
    table.add_row("in", f"{funnel['rows_in']:,}", "100.0%")
    for reason, count in funnel["reject_reasons"].items():
        table.add_row(f"  rejected: {reason}", f"{count:,}", f"{100 * count / n:.1f}%")
    table.add_row("passed", f"{funnel['passed']:,}", f"{100 * funnel['passed'] / n:.1f}%")
    console.print(table)
    for name, why in funnel.get("skipped_filters", {}).items():
        console.print(f"[yellow]filter {name} skipped: {why}[/yellow]")
    if funnel.get("cascade_orders"):  # [job] adaptive: reasons follow the orders the batches ran in
        used = "; ".join(f"{order} ({n})" for order, n in funnel["cascade_orders"].items())
        console.print("adaptive order: a row failing several checks records the first its batch ran; "
                      f"batches per order: {used}")
    if funnel.get("meaningless"):
        console.print(
            "[bold red]WARNING: " + ", ".join(funnel["meaningless"])
            + " come from a randomly initialised model (tiny-random): these numbers are meaningless.[/bold red]"
        )


@click.command("filter")
@click.option("--pool", required=True, help="Pool: tar shards, parquet, or image folder; a path or a URL (s3://, gs://, ...).")
@click.option("--out", "run_dir", required=True, help="Run directory; a path or a URL.")
@click.option("--config", "config_path", type=click.Path(), help="TOML config.")
@click.option("--master", help="Spark master (default from config: local[*]).")
@click.option("--conf", multiple=True, help="Spark config key=value (repeatable).")
@click.option("--score-all", is_flag=True, help="Run every filter on every row (threshold studies).")
@click.option("--save-embeddings", is_flag=True, help="Also write CLIP embeddings to RUN/embeddings/ (for aesthetic train, dedup).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def filter_cmd(pool, run_dir, config_path, master, conf, score_all, save_embeddings, quiet) -> None:
    """Score every pool sample (one row each) into RUN/scores/ on Spark."""
    from photogenic.pipeline.filtering.job import FilterJobFailed, JobConfigMismatch, run_filter
    from photogenic.pipeline.pool.readers import PoolError
    from photogenic.pipeline.core.spark import parse_conf

    config = load_or_exit(config_path)
    try:
        funnel = run_filter(pool, run_dir, config, master=master, conf=parse_conf(conf),
                            score_all=score_all or None, progress=not quiet and sys.stderr.isatty(),
                            save_embeddings=save_embeddings)
    except (PoolError, JobConfigMismatch, FilterJobFailed, ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None
    print_funnel(funnel)
    console.print(f"scores: {RunDir.of(run_dir).scores}")
