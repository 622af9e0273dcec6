#!/usr/bin/env bash
# Step 4: write the probe configs of every dataset x representation to
# <cache>/probes/<dataset>/<representation>/<uid>.json: the paper's 216-config grid, or GRID=demo
# for the small demo grid.
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for dataset in "${datasets[@]}"; do
  for representation in "${representations[@]}"; do
    jukemir grid-config "$dataset" "$representation" --grid "${GRID:-paper}" "$@"
  done
done
