#!/usr/bin/env bash
# The whole funnel on the sample pool: filter -> select -> review (simulated annotators in a real
# local Label Studio) -> export -> train (tiny model) -> eval -> report. Called by `make demo`.
set -euo pipefail
POOL=${1:-sample_pool}
RUN=${2:-runs/demo}
PG=".venv/bin/photogenic"
step() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }

step "filter: $POOL -> $RUN/scores"
$PG filter --pool "$POOL" --out "$RUN" --quiet
