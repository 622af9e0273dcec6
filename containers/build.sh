#!/usr/bin/env bash
# Build every image with one tag, and optionally push them: NAMESPACE/lib (the library container,
# containers/base.Dockerfile) and NAMESPACE/representations_<name> (containers/<name>.Dockerfile).
#
#   containers/build.sh [--tag TAG] [--namespace NS] [--push] [IMAGE ...] [-- DOCKER BUILD ARGS]
#
#   --tag TAG        image tag (default: $JUKEMIR_TAG, else latest)
#   --namespace NS   registry namespace (default: $JUKEMIR_NAMESPACE, else jukemir)
#   --push           push each image after building all of them
#   IMAGE            base, chroma, mfcc, choi, musicnn, clmr, jukebox (default: all)
#   after --          passed to docker build, e.g. -- --build-arg JUKEBOX_WEIGHTS=build
#
# The CPU images are built one after another, then the GPU ones, so that each group's common layers
# (see the Dockerfiles) are built once. Needs BuildKit (Docker >= 23, or DOCKER_BUILDKIT=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALL=(chroma mfcc choi base clmr musicnn jukebox)
tag="${JUKEMIR_TAG:-latest}"
namespace="${JUKEMIR_NAMESPACE:-jukemir}"
push=0
names=()
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
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

for name in "${names[@]}"; do
  echo "== building $(image_of "$name") from containers/$name.Dockerfile"
  DOCKER_BUILDKIT=1 docker build -f "containers/$name.Dockerfile" -t "$(image_of "$name")" \
    ${extra[@]+"${extra[@]}"} .
done
if [[ "$push" == 1 ]]; then
  for name in "${names[@]}"; do
    docker push "$(image_of "$name")"
  done
fi
for name in "${names[@]}"; do
  echo "built $(image_of "$name")"
done
