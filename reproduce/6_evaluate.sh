#!/usr/bin/env bash
# Step 6: for every dataset x representation with trained probes, pick the run with the best
# validation metric, evaluate it on test, and print the results table; then print it beside the
# paper's numbers and write the report. Writes RESULTS_DIR (default <cache>/results): results.json
# and report/. With GRID=paper (the default) every pair must have its 216 runs.
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
results="${RESULTS_DIR:-$(cache_dir)/results}"
mkdir -p "$results"
select=()
for dataset in "${datasets[@]}"; do
  select+=(--dataset "$dataset")
done
for representation in "${representations[@]}"; do
  select+=(--representation "$representation")
done
args=("${select[@]}")
if [[ "${GRID:-paper}" == paper ]]; then
  args+=(--expected-num-runs 216)
fi
jukemir evaluate "${args[@]}" --split test --out "$results/results.json" "$@"
jukemir report "${select[@]}" --out "$results/report"
