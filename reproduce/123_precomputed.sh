#!/usr/bin/env bash
# Steps 1-3 replaced: download, verify and unpack the paper's precomputed features into
# <cache>/representations/<dataset>/<representation>/<uid>.npy, and install the paper's metadata as
# <cache>/processed/<dataset>/meta.json (what the probes read; no audio is needed), for every
# dataset x representation of DATASETS x REPRESENTATIONS (24 tarballs by default). Further
# arguments go to `jukemir download` (e.g. --mirror URL).
set -euo pipefail
# shellcheck source=reproduce/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for dataset in "${datasets[@]}"; do
  for representation in "${representations[@]}"; do
    jukemir download precomputed "$dataset" "$representation" "$@"
  done
done
jukemir download metadata "$@"
