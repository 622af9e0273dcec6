#!/usr/bin/env bash
# Step 2: decode each benchmark into processed/<dataset>/wav/<uid>.wav + meta.json (about 50 GB),
# with the paper's metadata as the authority. Resumable: valid WAVs are kept.
# VERIFY=1 first checks that metadata derived from the raw annotations matches the paper's.
set -euo pipefail
JOBS="${JOBS:-$(nproc)}"
for dataset in gtzan_ff giantsteps_clips magnatagatune emomusic; do
  if [[ "${VERIFY:-0}" == 1 ]]; then
    jukemir process "$dataset" --verify-metadata --jobs "$JOBS" "$@"
  fi
  jukemir process "$dataset" --jobs "$JOBS" "$@"
done
