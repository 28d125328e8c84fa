#!/usr/bin/env bash
# The whole funnel on the sample pool: filter -> select -> the review passes of the config
# (SIMULATED annotators in a real local Label Studio; each pull learns a head from the decisions)
# -> reject audit (SIMULATED auditors from the pool's ground truth) -> export -> train (tiny model) -> eval ->
# A/B push, SIMULATED raters, pull -> report.
# Called by `make demo`; rerunning it skips finished work.
set -euo pipefail
POOL=${1:-sample_pool}
RUN=${2:-runs/demo}
CONFIG=${DEMO_CONFIG:-pipeline/data/demo.toml}
PG=".venv/bin/photogenic"
step() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
started=$(date +%s)

step "filter: $POOL -> $RUN/scores (Spark local[*])"
$PG filter --pool "$POOL" --out "$RUN" --config "$CONFIG" --save-embeddings --quiet

step "select: dedup, concept balance, engagement -> $RUN/candidates"
$PG select --run "$RUN" --config "$CONFIG"

step "review: a real Label Studio on 127.0.0.1"
$PG review server start --config "$CONFIG"
passes=$($PG review passes --config "$CONFIG")  # an assignment, so a bad config stops the demo
for pass in $passes; do
  step "review $pass: push, SIMULATED annotators, pull"
  $PG review push --run "$RUN" --pass $pass --config "$CONFIG"
  $PG review simulate --run "$RUN" --pass $pass --config "$CONFIG"
  $PG review pull --run "$RUN" --pass $pass --config "$CONFIG"
done
$PG review status --run "$RUN" --config "$CONFIG"

step "reject audit: a sample of every reject reason (+ passed control), SIMULATED auditors, estimates"
$PG review audit push --run "$RUN" --config "$CONFIG"
$PG review audit simulate --run "$RUN" --config "$CONFIG" --truth "$POOL/ground_truth.json"
$PG review audit pull --run "$RUN" --config "$CONFIG"

step "export: the last pass's keeps as webdataset + parquet manifest + imagefolder -> $RUN/export"
$PG export --run "$RUN" --config "$CONFIG"

step "train: quality-tune the tiny random base model (CPU) -> $RUN/model"
[ -f "$RUN/base/model_index.json" ] || $PG train --make-tiny-base "$RUN/base"
$PG train --data "$RUN/export" --base-model "$RUN/base" --out "$RUN/model" --config "$CONFIG" \
  || $PG train --data "$RUN/export" --base-model "$RUN/base" --out "$RUN/model" --config "$CONFIG" --resume

step "eval: base vs tuned on the same prompts and seeds -> $RUN/eval"
$PG eval --base "$RUN/base" --tuned "$RUN/model" --out "$RUN/eval" --config "$CONFIG"

step "eval A/B: push, SIMULATED raters, pull -> $RUN/eval/human_results.json"
$PG eval push --out "$RUN/eval" --config "$CONFIG"
$PG eval simulate --out "$RUN/eval" --config "$CONFIG"
$PG eval pull --out "$RUN/eval" --config "$CONFIG"

step "report"
$PG report --run "$RUN"

elapsed=$(( $(date +%s) - started ))
step "done in ${elapsed}s"
echo "report:        $(realpath "$RUN/report/index.html")"
$PG review server status --config "$CONFIG" || true
echo "Label Studio keeps the review projects for you to open (admin login in"
echo "  .cache/label-studio/photogenic-secrets.json); stop it with: .venv/bin/photogenic review server stop"
