#!/usr/bin/env bash
# Step 0 (the Docker route): start the library container (jukemir/lib, containers/base.Dockerfile)
# detached, named "jukemir" ($JUKEMIR_CONTAINER), running as you (your uid:gid), with the cache
# ($JUKEMIR_CACHE_DIR, default ~/.jukemir/cache) at /jukemir/cache, these scripts at
# /jukemir/reproduce, and every GPU when nvidia-smi finds one. Then run the numbered scripts in it:
#   docker exec -it jukemir bash reproduce/4_grid_config.sh      # or, from the host:
#   JUKEMIR_DOCKER=1 reproduce/4_grid_config.sh
# Build the image first (containers/build.sh base) or pull it. Stop it with `docker stop jukemir`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${JUKEMIR_CACHE_DIR:-$HOME/.jukemir/cache}"
name="${JUKEMIR_CONTAINER:-jukemir}"
image="${JUKEMIR_NAMESPACE:-jukemir}/lib:${JUKEMIR_TAG:-latest}"

if [[ -n "$(docker ps --quiet --filter "name=^${name}\$")" ]]; then
  echo "container $name is already running"
  exit 0
fi
mkdir -p "$cache"
gpus=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpus=(--gpus all)
else
  echo "no GPU found (nvidia-smi): the container will train probes on the CPU" >&2
fi
# Ray's object store lives in /dev/shm, which Docker limits to 64 MB by default.
docker run --detach --interactive --tty --rm --name "$name" \
  --user "$(id -u):$(id -g)" ${gpus[@]+"${gpus[@]}"} --shm-size "${JUKEMIR_SHM_SIZE:-8g}" \
  --env JUKEMIR_MIRROR \
  --volume "$cache:/jukemir/cache" --volume "$here:/jukemir/reproduce:ro" \
  "$image" bash
echo "started $name from $image; cache $cache at /jukemir/cache"
