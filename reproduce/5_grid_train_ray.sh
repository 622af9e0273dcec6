#!/usr/bin/env bash
# Step 5 on a Ray cluster: train every config that step 4 wrote, each dataset x representation's
# configs sharded over the cluster's workers (GPUs when it has them). RAY_ADDRESS names the cluster
# (e.g. auto, or ray://host:10001); unset, a local Ray is started for each pair. The cache must be
# the same path on every node (a shared file system). Further arguments go to `jukemir probe`.
# Resumable: configs with a finished run are skipped.
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shopt -s nullglob
address=()
if [[ -n "${RAY_ADDRESS:-}" ]]; then
  address=(--address "$RAY_ADDRESS")
fi
for dataset in "${datasets[@]}"; do
  for representation in "${representations[@]}"; do
    configs=("$(cache_dir)/probes/$dataset/$representation"/*.json)
    if [[ ${#configs[@]} -eq 0 ]]; then
      echo "5_grid_train_ray.sh: no configs in $(cache_dir)/probes/$dataset/$representation; run 4_grid_config.sh first" >&2
      exit 1
    fi
    jukemir probe "$dataset" "$representation" --config "${configs[@]}" --executor ray ${address[@]+"${address[@]}"} "$@"
  done
done
