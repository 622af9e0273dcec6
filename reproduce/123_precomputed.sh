#!/usr/bin/env bash
# Steps 1-3 replaced: download, verify and unpack the paper's 24 precomputed feature tarballs into
# representations/<dataset>/<representation>/<uid>.npy, and install the paper's metadata as
# processed/<dataset>/meta.json (what the probes read; no WAVs are needed).
# Optional arguments select a dataset and/or a representation, e.g. `123_precomputed.sh gtzan_ff jukebox`.
set -euo pipefail
jukemir download precomputed "$@" --jobs "${JOBS:-2}"
jukemir download metadata
