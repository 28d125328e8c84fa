"""`photogenic` command line. Stage commands load lazily so `photogenic config` stays instant."""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a file (spark-submit pipeline/cli.py ...): keep pipeline/select.py from shadowing
    # the standard library's `select` module.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import importlib
import logging

import click

# command name -> "module:attribute" of a click command or group.
LAZY_COMMANDS = {
    "config": "pipeline.cli_core:config_cmd",
    "sample-pool": "pipeline.cli_core:sample_pool_cmd",
    "filter": "pipeline.cli_core:filter_cmd",
    "select": "pipeline.select:select_cmd",
    "review": "annotation.cli:review",
    "aesthetic": "filters.aesthetic_cli:aesthetic",
    "export": "pipeline.export:export_cmd",
    "train": "training.cli:train_cmd",
    "eval": "training.eval_cli:eval_group",
    "report": "pipeline.report:report_cmd",
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
            @click.command(name, help=f"(unavailable: {err})",
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def unavailable() -> None:
                raise click.ClickException(f"'{name}' is not available: {err}")

            return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Photogenic: curate aesthetic quality-tuning sets (filter, select, review, export, train, eval)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    sys.exit(cli.main(prog_name="photogenic", standalone_mode=True))


if __name__ == "__main__":
    main()
