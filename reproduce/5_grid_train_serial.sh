#!/usr/bin/env bash
# Step 5, on this machine: train every config that step 4 wrote, one dataset x representation after
# another (a GPU when torch sees one). Each pair's configs are trained together as stacked tensors;
# pass --serial for the original's one-config-at-a-time loop (the same minibatches and initial
# weights; dropout masks then also the original's). Further arguments go to `jukemir probe`
# (e.g. --device cpu). Resumable: configs with a finished run are skipped.
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shopt -s nullglob
for dataset in "${datasets[@]}"; do
  for representation in "${representations[@]}"; do
    configs=("$(cache_dir)/probes/$dataset/$representation"/*.json)
    if [[ ${#configs[@]} -eq 0 ]]; then
      echo "5_grid_train_serial.sh: no configs in $(cache_dir)/probes/$dataset/$representation; run 4_grid_config.sh first" >&2
      exit 1
    fi
    jukemir probe "$dataset" "$representation" --config "${configs[@]}" "$@"
  done
done
