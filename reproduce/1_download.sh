#!/usr/bin/env bash
# Step 1: download and verify the raw files of the four benchmarks and the paper's metadata
# (about 8 GB into $JUKEMIR_CACHE_DIR/datasets). Resumable; set JUKEMIR_MIRROR or pass
# --mirror URL to fetch from a local or institutional mirror first.
set -euo pipefail
JOBS="${JOBS:-8}"
for dataset in gtzan giantsteps magnatagatune emomusic; do
  jukemir download "$dataset" --jobs "$JOBS" "$@"
done
