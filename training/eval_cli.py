"""`photogenic eval`: base vs tuned with automatic judges, and the human A/B review.

    photogenic eval --base BASE --tuned TUNED [--prompts FILE] --out DIR     (same as `eval run`)
    photogenic eval push --out DIR      # Label Studio A/B projects (appeal, faithfulness)
    photogenic eval simulate --out DIR  # SIMULATION: seeded synthetic raters answer both projects
    photogenic eval pull --out DIR      # win/tie/loss per question and category
"""
from __future__ import annotations

from pathlib import Path

import click

RUN_OPTIONS = [
    click.option("--base", type=click.Path(file_okay=False), help="Base diffusers pipeline directory."),
    click.option("--tuned", type=click.Path(file_okay=False), help="Tuned diffusers pipeline directory."),
    click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None,
                 help="Prompt file, 'category<TAB>prompt' per line (default: the shipped PartiPrompts-style set)."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (e.g. RUN/eval)."),
    click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config ([eval] section)."),
    click.option("--max-prompts", type=click.IntRange(min=1), help="Override [eval].max_prompts."),
    click.option("--steps", type=click.IntRange(min=1), help="Override [eval].steps."),
    click.option("--seeds", help="Override [eval].seeds, e.g. 0,1,2."),
    click.option("--device", help="Override [eval].device (auto, cpu, cuda)."),
]


def run_options(fn):
    for option in reversed(RUN_OPTIONS):
        fn = option(fn)
    return fn


def _config(config_path: str | None):
    from photogenic.pipeline.core.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


def _run(base, tuned, prompts_file, out_dir, config_path, max_prompts, steps, seeds, device) -> None:
    missing = [n for n, v in (("--base", base), ("--tuned", tuned), ("--out", out_dir)) if not v]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}")
    from photogenic.training.eval import PROMPTS_FILE, EvalError, run_eval

    config = _config(config_path)
    updates = {k: v for k, v in (("max_prompts", max_prompts), ("steps", steps), ("device", device)) if v}
    if seeds:
        try:
            updates["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise click.BadParameter(f"--seeds wants integers separated by commas, got {seeds!r}") from None
    cfg = config.eval.model_copy(update=updates)
    clip = config.filters.clip
    try:
        results = run_eval(base, tuned, out_dir, prompts_file or PROMPTS_FILE, cfg,
                           filter_clip=(clip.model, clip.pretrained),
                           filter_aesthetic_head=config.filters.aesthetic.head)
    except (EvalError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    print_results(results)


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    console = Console()
    for note in results["notes"]:
        label = "[bold red]NOTE:[/bold red]" if results["meaningless"] else "note:"
        console.print(f"{label} {escape(note)}")
    for metric, table in results["tables"].items():
        _print_table(console, f"{metric}: tuned vs base ({results['pairs']} pairs)", table, Table)


def _print_table(console, title: str, table: dict, Table) -> None:
    t = Table(title=title)
    for col in ("category", "n", "win", "tie", "loss", "win 95% CI"):
        t.add_column(col, justify="left" if col == "category" else "right")
    for cat, r in table.items():
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        t.add_row(cat, str(r["n"]), pct(r["win"]), pct(r["tie"]), pct(r["loss"]),
                  f"{pct(r['win_ci'][0])}–{pct(r['win_ci'][1])}")
    console.print(t)


@click.group("eval", invoke_without_command=True)
@run_options
@click.pass_context
def eval_group(ctx: click.Context, **kwargs) -> None:
    """Base vs tuned: same prompts and seeds, CLIP/aesthetic win rates; `push`/`pull` for human A/B."""
    if ctx.invoked_subcommand is None:
        if not any(kwargs.values()):
            click.echo(ctx.get_help())
            return
        _run(**kwargs)


@eval_group.command("run")
@run_options
def run_cmd(**kwargs) -> None:
    """Generate images from both models and tally automatic win/tie/loss per category."""
    _run(**kwargs)


def _client(config_path: str | None, url: str | None):
    from photogenic.annotation import server
    from photogenic.annotation.lsclient import Client

    config = _config(config_path)
    try:
        conn = server.connect(config.review, url=url)
    except server.ServerError as err:
        raise click.ClickException(str(err)) from None
    review = config.review
    return config, Client(conn, max_retries=review.max_retries, backoff_s=review.backoff_s,
                          backoff_max_s=review.backoff_max_s, timeout_s=review.request_timeout_s)


AB_OPTIONS = [
    click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, exists=True),
                 help="The folder `photogenic eval` wrote."),
    click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config."),
    click.option("--url", help="A Label Studio of your own (token in LABEL_STUDIO_API_KEY); default: the local one."),
]


def ab_options(fn):
    for option in reversed(AB_OPTIONS):
        fn = option(fn)
    return fn


@eval_group.command("push")
@ab_options
@click.option("--limit", type=click.IntRange(min=1), help="Push only the first N pairs.")
def push_cmd(out_dir: str, config_path: str | None, url: str | None, limit: int | None) -> None:
    """Create the A/B projects (visual appeal: prompt hidden; text faithfulness: prompt shown)."""
    from photogenic.annotation.lsclient import LabelStudioError
    from photogenic.annotation.tasksets import ImportPolicy
    from photogenic.training.eval_ab import ABError, push

    config, client = _client(config_path, url)
    try:
        summary = push(Path(out_dir), client, config.eval, limit=limit, echo=click.echo,
                       policy=ImportPolicy.from_config(config.review))
    except (ABError, LabelStudioError) as err:
        raise click.ClickException(str(err)) from None
    for question, p in summary["projects"].items():
        click.echo(f"{question}: {p['url']} ({p['tasks']} tasks, {p['raters']} raters each)")


@eval_group.command("simulate")
@ab_options
@click.option("--raters", type=click.IntRange(1, 20),
              help="Simulated raters working both projects (default: the larger of [eval] appeal_raters "
                   "and faithfulness_raters, so every task gets the raters its project asks for).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--win", "win", default=0.6, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Probability that a simulated rater answers with the tuned image.")
@click.option("--tie", "tie", default=0.15, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Probability of a tie answer (appeal: Tie; faithfulness: Both or Neither).")
def simulate_cmd(out_dir: str, config_path: str | None, url: str | None, raters: int | None, seed: int,
                 win: float, tie: float) -> None:
    """SIMULATION: seeded synthetic raters answer both A/B projects through Label Studio's queue."""
    from photogenic.annotation.lsclient import LabelStudioError
    from photogenic.annotation.server import data_dir
    from photogenic.annotation.simulate import SimulationError
    from photogenic.annotation.users import AnnotatorStore
    from photogenic.training.eval_ab import ABError
    from photogenic.training.eval_simulate import simulate

    config, client = _client(config_path, url)
    n = raters or max(config.eval.appeal_raters, config.eval.faithfulness_raters)
    store = AnnotatorStore(data_dir(config.review) / "annotators.json")
    echo = lambda m: click.secho(m, fg="magenta", bold=True)  # noqa: E731
    try:
        summary = simulate(Path(out_dir), client, store, n_raters=n, seed=seed, win=win, tie=tie, echo=echo)
    except (ABError, SimulationError, LabelStudioError) as err:
        raise click.ClickException(str(err)) from None
    echo(f"SIMULATION: {summary['annotations_submitted']} simulated A/B answer(s) in total; "
         f"written: {Path(out_dir) / 'ab' / 'simulation.json'}")


@eval_group.command("pull")
@ab_options
def pull_cmd(out_dir: str, config_path: str | None, url: str | None) -> None:
    """Fetch every A/B annotation and tally win/tie/loss per question and category."""
    from rich.console import Console
    from rich.table import Table

    from photogenic.annotation.lsclient import LabelStudioError
    from photogenic.training.eval_ab import ABError, pull

    config, client = _client(config_path, url)
    try:
        results = pull(Path(out_dir), client, config.eval)
    except (ABError, LabelStudioError) as err:
        raise click.ClickException(str(err)) from None
    console = Console()
    for note in results["notes"]:
        console.print(f"note: {note}", markup=False)
    sim = "SIMULATED " if results.get("simulated") else ""
    for question, table in results["tables"].items():
        tasks = results["tasks"][question]
        _print_table(console, f"{sim}{question}: {tasks['with_votes']} of {tasks['pushed']} tasks have votes "
                              f"({tasks['complete']} complete)", table, Table)
    click.echo(f"written: {Path(out_dir) / 'human_results.json'}")
