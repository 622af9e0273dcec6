#!/usr/bin/env bash
# Build every image with one tag, and optionally push them: NAMESPACE/lib (the library container,
# containers/base.Dockerfile) and NAMESPACE/representations_<name> (containers/<name>.Dockerfile).
#
#   containers/build.sh [--tag TAG] [--namespace NS] [--cpu-base IMG] [--gpu-base IMG] [--push]
#                       [IMAGE ...] [-- DOCKER BUILD ARGS]
#
#   --tag TAG        image tag (default: $JUKEMIR_TAG, else latest)
#   --namespace NS   registry namespace (default: $JUKEMIR_NAMESPACE, else jukemir)
#   --cpu-base IMG   BASE_IMAGE of chroma, mfcc, choi (default: $JUKEMIR_CPU_BASE, else the Dockerfiles')
#   --gpu-base IMG   BASE_IMAGE of base, clmr, musicnn, jukebox (default: $JUKEMIR_GPU_BASE, else theirs)
#   --push           push each image after building all of them
#   IMAGE            base, chroma, mfcc, choi, musicnn, clmr, jukebox (default: all)
#   after --         passed to docker build, e.g. -- --build-arg JUKEBOX_WEIGHTS=build
#
# The CPU images are built one after another, then the GPU ones, so that each group's common layers
# (see the Dockerfiles) are built once. Each image gets the OCI labels version (the tag) and revision
# (the git commit, "-dirty" with uncommitted changes) on top of the Dockerfile's own. BuildKit is
# switched on (DOCKER_BUILDKIT=1; Docker >= 18.09, no buildx needed). $DOCKER names the client
# (default: docker on PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALL=(chroma mfcc choi base clmr musicnn jukebox)
CPU=(chroma mfcc choi)
docker="${DOCKER:-docker}"
tag="${JUKEMIR_TAG:-latest}"
namespace="${JUKEMIR_NAMESPACE:-jukemir}"
cpu_base="${JUKEMIR_CPU_BASE:-}"
gpu_base="${JUKEMIR_GPU_BASE:-}"
push=0
names=()
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --cpu-base) cpu_base="$2"; shift 2 ;;
    --gpu-base) gpu_base="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *)
      if [[ ! -f "containers/$1.Dockerfile" ]]; then
        echo "build.sh: no containers/$1.Dockerfile (images: ${ALL[*]})" >&2
        exit 2
      fi
      names+=("$1"); shift ;;
  esac
done
if [[ ${#names[@]} -eq 0 ]]; then
  names=("${ALL[@]}")
fi

image_of() {
  if [[ "$1" == base ]]; then
    echo "$namespace/lib:$tag"
  else
    echo "$namespace/representations_$1:$tag"
  fi
}

# the base image of NAME's group, if one was given
base_of() {
  if [[ " ${CPU[*]} " == *" $1 "* ]]; then
    echo "$cpu_base"
  else
    echo "$gpu_base"
  fi
}

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$revision" != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then
  revision="$revision-dirty"
fi
for name in "${names[@]}"; do
  args=(--label "org.opencontainers.image.version=$tag" --label "org.opencontainers.image.revision=$revision")
  base="$(base_of "$name")"
  if [[ -n "$base" ]]; then
    args+=(--build-arg "BASE_IMAGE=$base")
  fi
  echo "== building $(image_of "$name") from containers/$name.Dockerfile${base:+ on $base}"
  DOCKER_BUILDKIT=1 "$docker" build -f "containers/$name.Dockerfile" -t "$(image_of "$name")" \
    "${args[@]}" ${extra[@]+"${extra[@]}"} .
done
if [[ "$push" == 1 ]]; then
  for name in "${names[@]}"; do
    "$docker" push "$(image_of "$name")"
  done
fi
for name in "${names[@]}"; do
  echo "built $(image_of "$name")"
done
