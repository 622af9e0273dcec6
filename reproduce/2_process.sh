#!/usr/bin/env bash
# Step 2: decode each benchmark into <cache>/processed/<dataset>/wav/<uid>.wav + meta.json (about
# 50 GB), with the paper's metadata as the authority. Resumable: valid WAVs are kept. JOBS decoding
# processes (default: the core count). VERIFY=1 first checks that the metadata derived from the raw
# annotations matches the paper's.
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
jobs="${JOBS:-$(nproc)}"
for dataset in "${datasets[@]}"; do
  if [[ "${VERIFY:-0}" == 1 ]]; then
    jukemir process "$dataset" --verify-metadata --jobs "$jobs" "$@"
  fi
  jukemir process "$dataset" --jobs "$jobs" "$@"
done
