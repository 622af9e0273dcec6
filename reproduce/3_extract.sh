#!/usr/bin/env bash
# Step 3: extract every representation of every dataset (DATASETS x REPRESENTATIONS), 256 files per
# batch, from <cache>/processed/<dataset>/wav into <cache>/representations/<dataset>/<representation>.
#   - on the host: one `docker run` of jukemir/representations_<name> per batch, one after another
#     (`python3 reproduce/3_extract.py` prints them instead, to spread them over machines);
#   - in the library container, or with --local: natively here (`jukemir extract`, weights fetched
#     into the cache on first use; GPU when torch sees one).
# Further arguments go to 3_extract.py (see its --help). Resumable: finished outputs are kept.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=reproduce/common.sh
source "$here/common.sh"
if [[ "${JUKEMIR_IN_DOCKER:-0}" == 1 ]]; then
  mode=(--local)  # no Docker inside the container
else
  mode=(--run)
fi
for arg in "$@"; do
  if [[ "$arg" == --local ]]; then
    mode=()
  fi
done
exec python3 "$here/3_extract.py" "${mode[@]}" --datasets "${datasets[@]}" --representations "${representations[@]}" "$@"
