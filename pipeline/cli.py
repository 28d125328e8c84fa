"""`photogenic` command line. Stage commands load lazily so `photogenic config` stays instant."""
from __future__ import annotations

import importlib
import logging
import sys

import click

# command name -> "module:attribute" of a click command or group.
LAZY_COMMANDS = {
    "config": "photogenic.pipeline.commands:config_cmd",
    "sample-pool": "photogenic.pipeline.commands:sample_pool_cmd",
    "filter": "photogenic.pipeline.commands:filter_cmd",
    "select": "photogenic.pipeline.selection.stage:select_cmd",
    "review": "photogenic.annotation.cli:review",
    "aesthetic": "photogenic.filters.aesthetic_cli:aesthetic",
    "export": "photogenic.pipeline.export.stage:export_cmd",
    "train": "photogenic.training.cli:train_cmd",
    "eval": "photogenic.training.eval_cli:eval_group",
    "report": "photogenic.pipeline.report.stage:report_cmd",
    "run": "photogenic.pipeline.orchestrate:run_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = LAZY_COMMANDS.get(name)
        if spec is None:
            return None
        module, attr = spec.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            why = str(err)  # `err` is unbound once the except block ends

            @click.command(name, help=f"(unavailable: {why})",
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def unavailable() -> None:
                raise click.ClickException(f"'{name}' is not available: {why}")

            return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="photogenic", prog_name="photogenic",
                      message="%(prog)s %(version)s")  # the installed distribution's version
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Photogenic: curate aesthetic quality-tuning sets (filter, select, review, export, train, eval)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    from photogenic.pipeline.core.storage import store_errors

    try:
        sys.exit(cli.main(prog_name="photogenic", standalone_mode=False))
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except store_errors() as err:  # a store that refused or went away: say which, no stack dump
        click.echo(f"Error: storage unavailable: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
