"""`photogenic review ...`: the local Label Studio, push, pull, status, simulate, invite."""
from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from photogenic.annotation import server
from photogenic.annotation.lsclient import Client, LabelStudioError, open_client
from photogenic.pipeline.core.config.review import PassConfig, ReviewConfig, pass_label
from photogenic.pipeline.core.layout import RunDir

# Wide enough for the quality tables when output goes to a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)

config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             help="Photogenic TOML config ([review] section).")
url_option = click.option("--url", help=f"Your own Label Studio (token from ${server.TOKEN_ENV}); "
                                        "default: the local server.")
run_option = click.option("--run", "run", required=True, help="Run directory: a path or a URL (s3://...).")
pass_option = click.option("--pass", "pass_ref", required=True, metavar="NAME|N",
                           help="Review pass: its name in [[review.passes]] or its 1-based number.")


def _review_config(path: str | None) -> ReviewConfig:
    return _full_config(path).review  # runs on a store: [storage.options.PROTOCOL] configured


def _full_config(path: str | None):
    from photogenic.pipeline.core.config import ConfigError, load_config
    from photogenic.pipeline.core.storage import configure

    try:
        config = load_config(path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    configure(config.storage.options)
    return config


def _pass(config: ReviewConfig, ref: str) -> PassConfig:
    try:
        return config.pass_config(ref)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--pass'") from None


def _client(config: ReviewConfig, url: str | None, start_local: bool = True) -> Client:
    try:
        return open_client(config, url, start_local=start_local)
    except server.ServerError as err:
        raise click.ClickException(str(err)) from None


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from None


@click.group()
def review() -> None:
    """Human review in Label Studio, in the passes of [[review.passes]] (by default two: pass 1
    recall, pass 2 precision)."""


# --- server ----------------------------------------------------------------------------------


@review.group("server")
def server_group() -> None:
    """The local Label Studio (own virtualenv, 127.0.0.1 only)."""


def _server_config(config_path: str | None, port: int | None, data_dir: str | None) -> ReviewConfig:
    config = _review_config(config_path)
    if port is not None:
        config.port = port
    if data_dir is not None:
        config.data_dir = data_dir
    return config


server_options = [
    config_option,
    click.option("--port", type=int, help="Port on 127.0.0.1 (default from config: 8089)."),
    click.option("--data-dir", help="Label Studio data folder (default: PHOTOGENIC_LS_DATA_DIR, a checkout's .cache/label-studio, else the user data dir)."),
]


def _with_server_options(fn):
    for opt in reversed(server_options):
        fn = opt(fn)
    return fn


@server_group.command("start")
@_with_server_options
@click.option("--db", type=click.Choice(["sqlite", "postgres"]),
              help="Database: sqlite (a file), or postgres (a PostgreSQL server this project runs; "
                   "for ~10-100K tasks and more). Default: [review] db, else the one this data dir "
                   "last ran on, else sqlite.")
def server_start(config_path, port, data_dir, db) -> None:
    """Install (once) and start Label Studio; creates the admin and API token without prompts."""
    config = _server_config(config_path, port, data_dir)
    if db is not None:
        config.db = db
    try:
        conn = server.start(config, echo=lambda m: err_console.print(m))
    except server.ServerError as err:
        _fail(err)
    ddir = server.data_dir(config).resolve()
    st = server.status(config)
    console.print(f"Label Studio is running at [bold]{conn.url}[/] (pid {st['pid']})")
    console.print(f"  database: {server.describe_database(st)}")
    console.print(f"  log in as {conn.admin_email}; the password and API token are in "
                  f"{ddir / server.SECRETS_FILE} (mode 0600)")
    console.print("  stop it with: photogenic review server stop"
                  + (f" --port {config.port}" if port else "")
                  + (f" --data-dir {data_dir}" if data_dir else ""))


@server_group.command("stop")
@_with_server_options
def server_stop(config_path, port, data_dir) -> None:
    """Stop the Label Studio this project started (only its recorded PID), then its PostgreSQL."""
    config = _server_config(config_path, port, data_dir)
    try:
        stopped = server.stop(config)
    except server.ServerError as err:
        _fail(err)
    if stopped:
        console.print("Label Studio stopped")
    else:
        console.print("no Label Studio started by photogenic is running")


@server_group.command("status")
@_with_server_options
def server_status(config_path, port, data_dir) -> None:
    """Whether the local Label Studio runs and answers, and which database it uses."""
    config = _server_config(config_path, port, data_dir)
    st = server.status(config)
    if st["running"]:
        console.print(f"running: pid {st['pid']} at {st['url']} (healthy: {st['healthy']})")
        console.print(f"database: {server.describe_database(st)}")
    else:
        console.print(f"not running (data dir {st['data_dir']})")
        console.print(f"database (next start): {server.describe_database(st)}")
        sys.exit(3)


@server_group.command("migrate-db")
@_with_server_options
@click.option("--to", "target", type=click.Choice(["sqlite", "postgres"]), required=True,
              help="The database to move this data dir's Label Studio to.")
def server_migrate_db(config_path, port, data_dir, target) -> None:
    """Move the Label Studio data (users, tokens, projects, tasks, annotations) to another
    database: stop, dump (Django dumpdata), migrate and load into the new one, start on it."""
    from photogenic.annotation import migrate_db

    config = _server_config(config_path, port, data_dir)
    try:
        moved = migrate_db.migrate(config, target, echo=lambda m: err_console.print(m))
    except server.ServerError as err:
        _fail(err)
    console.print(f"moved {moved.n_objects} Label Studio objects from {moved.source} to {moved.target}")
    console.print(f"  database: {server.describe_database(server.status(config))}")
    console.print(f"  the old database is kept: {moved.kept}; remove it once you have checked the move")


# --- push / pull -----------------------------------------------------------------------------


@review.command("push")
@run_option
@pass_option
@url_option
@config_option
@click.option("--gold", "gold_file", type=click.Path(dir_okay=False, exists=True),
              help="Known answers (csv/parquet: key, keep) for gold tasks of this pass.")
@click.option("--limit", type=int, help="Push only the first N images (trials).")
def push_cmd(run, pass_ref, url, config_path, gold_file, limit) -> None:
    """Import the pass's images as tasks (batched, retried, one task per key ever)."""
    from photogenic.annotation.push import PushError, push

    config = _review_config(config_path)
    p = _pass(config, pass_ref)
    client = _client(config, url)
    try:
        result = push(run, p.name, client, config, gold_file=gold_file, limit=limit,
                      echo=lambda m: err_console.print(m))
    except (PushError, LabelStudioError) as err:
        _fail(err)
    grid = f" in {result.n_tasks} grid task(s)" if result.n_tasks != result.n_in_project else ""
    console.print(f"{pass_label(p.name)}: {result.n_imported} new image(s) imported, {result.n_in_project} in "
                  f"project {result.project_id}{grid} ({result.n_gold} gold, {result.n_unreadable} unreadable) "
                  f"in {result.seconds:.1f}s")
    console.print(f"  annotate at {client.url}/projects/{result.project_id}/data")


@review.command("pull")
@run_option
@pass_option
@url_option
@config_option
@click.option("--full", is_flag=True, help="Read every annotated task again (default: only the "
              "tasks updated since the last pull began).")
def pull_cmd(run, pass_ref, url, config_path, full) -> None:
    """Fetch new and changed annotations; write annotations.parquet + decisions.parquet by the pass's rule."""
    from photogenic.annotation.pull import PullError, pull

    config = _review_config(config_path)
    p = _pass(config, pass_ref)
    client = _client(config, url)
    try:
        q = pull(run, p.name, client, config, full=full)
    except (PullError, LabelStudioError) as err:
        _fail(err)
    how = (f"{q['pull']['tasks_fetched']} task(s) updated since the last pull" if q["pull"]["incremental"]
           else f"{q['pull']['tasks_fetched']} annotated task(s), all read")
    console.print(f"{pass_label(p.name)}: {how}; {q['n_annotations']} annotation(s) of {q['tasks']} image(s); "
                  f"kept {q['kept']} by rule '{q['rule']}' -> {RunDir.of(run).decisions(p.name)}")
    _print_head(q.get("head") or {}, p.name)


def _print_head(meta: dict, name: str) -> None:
    if "skipped" in meta:
        console.print(f"  no head learnt from {name}: {meta['skipped']}")
        return
    auc = (meta.get("held_out") or {}).get("auc")
    console.print(f"  head learnt from {name}{' (unchanged decisions: reused)' if meta.get('reused') else ''}: "
                  f"held-out AUC {_fmt(auc, '.3f')} -> RUN/review/{name}/head.pth")
    if meta.get("meaningless"):
        err_console.print("  note: tiny-random CLIP embeddings: this head and its AUC mean nothing")


@review.command("learn")
@run_option
@pass_option
@config_option
def learn_cmd(run, pass_ref, config_path) -> None:
    """Learn the pass's aesthetic head from its decisions on RUN/embeddings (pull does this too)."""
    from photogenic.annotation import head

    config = _review_config(config_path)
    p = _pass(config, pass_ref)
    if not RunDir.of(run).decisions(p.name).exists():
        _fail(click.ClickException(f"no decisions for {p.name}: run `photogenic review pull` first"))
    try:
        meta = head.learn(run, p.name, config, echo=lambda m: console.print(m))
    except (ValueError, OSError, RuntimeError) as err:
        _fail(err)
    if "skipped" in meta:
        _fail(click.ClickException(f"no head learnt from {p.name}: {meta['skipped']}"))
    if meta.get("reused"):
        _print_head(meta, p.name)


# --- simulate / invite -----------------------------------------------------------------------


@review.command("simulate")
@run_option
@pass_option
@url_option
@config_option
@click.option("--annotators", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--keep-share", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Share of keep votes each simulated annotator aims at (default: ~1 in 10 kept "
                   "per pass, by its label config).")
def simulate_cmd(run, pass_ref, url, config_path, annotators, seed, keep_share) -> None:
    """SIMULATION: seeded synthetic annotators answer a pass through Label Studio's API."""
    from photogenic.annotation.simulate import SimulationError, simulate

    config = _review_config(config_path)
    p = _pass(config, pass_ref)
    client = _client(config, url)
    try:
        simulate(run, p.name, client, config, annotators=annotators, seed=seed, keep_share=keep_share,
                 echo=lambda m: console.print(f"[bold magenta]{m}[/]"))
    except (SimulationError, LabelStudioError) as err:
        _fail(err)


# --- reject audit ----------------------------------------------------------------------------


@review.group("audit")
def audit_group() -> None:
    """Reject audit: would people have kept what the filters threw away? ([review.audit])"""


@audit_group.command("push")
@run_option
@url_option
@config_option
def audit_push_cmd(run, url, config_path) -> None:
    """Push a seeded sample of every reject reason, and of passed images as a control."""
    from photogenic.annotation import audit

    config = _full_config(config_path)
    client = _client(config.review, url)
    try:
        r = audit.push(run, client, config, echo=lambda m: err_console.print(m))
    except (audit.AuditError, LabelStudioError) as err:
        _fail(err)
    per = ", ".join(f"{k} {v}" for k, v in sorted(r["strata"].items()))
    console.print(f"reject audit: {r['sampled']} image(s) drawn ({per}); {r['imported']} new task(s), "
                  f"{r['in_project']} in project {r['project_id']}")
    console.print(f"  answer at {r['url']}")


@audit_group.command("simulate")
@run_option
@url_option
@config_option
@click.option("--truth", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The sample pool's ground_truth.json (what each image should be).")
@click.option("--error-rate", default=0.0, show_default=True, type=click.FloatRange(0.0, 0.5))
@click.option("--seed", default=0, show_default=True, type=int)
def audit_simulate_cmd(run, url, config_path, truth, error_rate, seed) -> None:
    """SIMULATION: auditors answer from the sample pool's ground truth, through Label Studio."""
    from photogenic.annotation import audit
    from photogenic.annotation.simulate import SimulationError

    config = _full_config(config_path)
    client = _client(config.review, url)
    try:
        audit.simulate(run, client, config, truth, error_rate=error_rate, seed=seed,
                       echo=lambda m: console.print(f"[bold magenta]{m}[/]"))
    except (SimulationError, LabelStudioError) as err:
        _fail(err)


@audit_group.command("pull")
@run_option
@url_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print audit.json.")
def audit_pull_cmd(run, url, config_path, as_json) -> None:
    """Estimate each reason's false-reject rate; suggest thresholds (RUN/review/audit/thresholds.toml)."""
    from photogenic.annotation import audit

    config = _full_config(config_path)
    client = _client(config.review, url)
    try:
        result = audit.pull(run, client, config)
    except (audit.AuditError, LabelStudioError) as err:
        _fail(err)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for note in result["notes"]:
        console.print(f"[bold magenta]{note}[/]" if note.startswith("SIMULATION") else note)
    table = Table(title=f"reject audit: {result['images_answered']} of {result['images_sampled']} image(s) answered")
    for col in ("stratum", "rows", "answered", "should keep", "rate", f"{result['confidence']:.0%} CI"):
        table.add_column(col, justify="left" if col == "stratum" else "right")
    for name, s in sorted(result["strata"].items()):
        table.add_row(name, f"{s['population']:,}", str(s["answered"]), str(s["should_keep"]),
                      _fmt(s["rate"], ".1%"), f"{s['ci'][0]:.1%}-{s['ci'][1]:.1%}")
    console.print(table)
    out = audit.audit_dir(run)
    console.print(f"threshold suggestions -> {out / 'thresholds.toml'}; estimates -> {out / 'audit.json'}")


@review.command("invite")
@url_option
@config_option
def invite_cmd(url, config_path) -> None:
    """Print the signup link to send to annotators (they join the organisation through it)."""
    from photogenic.annotation.users import invite_url

    config = _review_config(config_path)
    console.print(invite_url(_client(config, url)))


# --- passes / status -------------------------------------------------------------------------


@review.command("passes")
@config_option
@click.option("--verbose", "-v", is_flag=True, help="Also each pass's input, label config and rule.")
def passes_cmd(config_path, verbose) -> None:
    """The configured review passes, one name a line, in order (for scripts: `for p in $(...)`)."""
    for p in _review_config(config_path).passes:
        if verbose:
            rating = f", min mean rating {p.min_mean_rating}" if p.min_mean_rating is not None else ""
            click.echo(f"{p.name}\tinput {p.input}, label config {p.label_config}, "
                       f"rule {p.rule}{rating}, {p.annotator_group}s")
        else:
            click.echo(p.name)


# --- status ----------------------------------------------------------------------------------


@review.command("status")
@run_option
@url_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(run, url, config_path, as_json) -> None:
    """Progress per pass (done/total, ETA) and annotator quality (agreement, gold accuracy)."""
    from photogenic.annotation.progress import run_status

    config = _review_config(config_path)
    try:
        client = _client(config, url, start_local=False)
    except click.ClickException as err:
        err_console.print(f"{err.message}; showing the last pull")
        client = None
    passes = run_status(run, client, config)
    if as_json:
        click.echo(json.dumps(passes, indent=2, default=str))
        return
    for st in passes:
        _print_pass(st)


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no recent rate)"
    if seconds == 0:
        return "done"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h {rem // 60:02d}m" if h else f"{rem // 60}m {rem % 60:02d}s"


def _print_pass(st: dict) -> None:
    n = pass_label(st["name"])
    if st["source"] == "not pushed":
        console.print(f"[bold]{n}[/]: not pushed yet")
        return
    sim = " [magenta](SIMULATED annotators)[/]" if st.get("simulated") else ""
    images = f" ({st['images']} images)" if st.get("images", st["tasks"]) != st["tasks"] else ""
    console.print(f"[bold]{n}[/] ({st['source']}){sim}: tasks complete {st['tasks_complete']}/"
                  f"{st['tasks']}{images}, annotations {st['annotations_done']}/{st['annotations_needed']}, "
                  f"rate {_fmt(st['annotations_per_hour'], '.0f')}/h, ETA {_duration(st['eta_seconds'])}")
    if st.get("decisions"):
        d = st["decisions"]
        console.print(f"  decisions (last pull): kept {d['kept']} of {d['keys']}")
    q = st["quality"]
    as_of = f" (as of the {st['quality_source']})" if st.get("quality_source") else ""
    table = Table(title=f"{n} annotators{as_of}", show_lines=False)
    for col in ("annotator", "annotations", "keep rate", "gold acc.", "gold n", "s/task (median)", "mean rating"):
        table.add_column(col, justify="left" if col == "annotator" else "right")
    for a in q["annotators"]:
        table.add_row(a["annotator"], str(a["annotations"]), _fmt(a["keep_rate"]),
                      _fmt(a["gold_accuracy"]), str(a["gold_tasks"]),
                      _fmt(a["median_seconds_per_task"], ".1f"), _fmt(a["mean_rating"]))
    console.print(table)
    ag = q["agreement"]
    console.print(f"  agreement on {ag['overlapping_tasks']} overlapping task(s): "
                  f"Krippendorff's alpha (keep) {_fmt(ag['krippendorff_alpha_keep'])}, "
                  f"Fleiss' kappa {_fmt(ag['fleiss_kappa_keep'])} ({ag['fleiss_tasks']} tasks x "
                  f"{ag['fleiss_raters_per_task']} raters), percent agreement {_fmt(ag['percent_agreement'])}, "
                  f"alpha (mean rating) {_fmt(ag['krippendorff_alpha_mean_rating'])}")
    if ag["cohen_kappa_pairs"]:
        pairs = Table(title=f"{n} Cohen's kappa per pair of annotators")
        for col in ("annotator A", "annotator B", "shared tasks", "Cohen's kappa"):
            pairs.add_column(col, justify="right" if "annotator" not in col else "left")
        for pair in ag["cohen_kappa_pairs"]:
            pairs.add_row(pair["a"], pair["b"], str(pair["shared_tasks"]), _fmt(pair["cohen_kappa"]))
        console.print(pairs)
