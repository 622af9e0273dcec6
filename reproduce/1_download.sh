#!/usr/bin/env bash
# Step 1: download and verify the raw files of the benchmarks and the paper's metadata (about 8 GB
# into <cache>/datasets). Resumable; set JUKEMIR_MIRROR or pass --mirror URL to fetch from a local
# or institutional mirror first. JOBS parallel downloads (default 8).
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for dataset in "${datasets[@]}"; do
  jukemir download "$dataset" --jobs "${JOBS:-8}" "$@"
done
