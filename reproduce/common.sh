# shellcheck shell=bash
# Sourced by the numbered scripts; not run on its own.
#
# Where the scripts run: natively (the `jukemir` command on PATH, the cache at $JUKEMIR_CACHE_DIR,
# default ~/.jukemir/cache), or inside the library container that 0_docker.sh starts, either by
# hand (`docker exec -it jukemir bash reproduce/4_grid_config.sh`) or from the host with
# JUKEMIR_DOCKER=1, which re-runs the script in that container ($JUKEMIR_CONTAINER, default jukemir).
# The image sets JUKEMIR_IN_DOCKER=1, so a script knows it is inside.
#
# What they run on: DATASETS and REPRESENTATIONS, space-separated (default: the paper's four and six),
# e.g. DATASETS=gtzan_ff REPRESENTATIONS="chroma jukebox" reproduce/4_grid_config.sh

if [[ "${JUKEMIR_DOCKER:-0}" == 1 && "${JUKEMIR_IN_DOCKER:-0}" != 1 ]]; then
  tty=()
  if [[ -t 0 && -t 1 ]]; then
    tty=(-t)
  fi
  exec docker exec -i ${tty[@]+"${tty[@]}"} \
    -e DATASETS -e REPRESENTATIONS -e GRID -e JOBS -e VERIFY -e RAY_ADDRESS -e RESULTS_DIR -e JUKEMIR_MIRROR \
    "${JUKEMIR_CONTAINER:-jukemir}" bash "reproduce/$(basename "$0")" "$@"
fi

# shellcheck disable=SC2034  # used by the scripts that source this file
read -r -a datasets <<< "${DATASETS:-gtzan_ff giantsteps_clips magnatagatune emomusic}"
# shellcheck disable=SC2034
read -r -a representations <<< "${REPRESENTATIONS:-chroma mfcc choi musicnn clmr jukebox}"

# The cache root, as jukemir/cache.py resolves it.
cache_dir() {
  echo "${JUKEMIR_CACHE_DIR:-$HOME/.jukemir/cache}"
}
