#!/usr/bin/env bash
# Get a Debian/Ubuntu machine from nothing to a working Docker engine and the base images that
# jukemir's Dockerfiles build FROM, without a container registry:
#
#   1. the engine: `apt-get install docker.io mmdebstrap` if dockerd or mmdebstrap is missing;
#   2. the daemon: started in the background (log: $DOCKERD_LOG) unless one answers already;
#   3. for each public base image (BASE_IMAGE defaults of containers/*.Dockerfile) that is neither
#      present nor pullable, a local stand-in made with mmdebstrap (no registry involved):
#        jukemir-local/python:3.11-bookworm     for python:3.11.13-slim-bookworm (the CPU images):
#            Debian bookworm (minbase) + python3, python3-venv, ca-certificates, a venv at /opt/venv
#            first on PATH (so `pip` and `python` are the venv's, as `pip`/`python` in the public image);
#        jukemir-local/cuda-standin:bookworm    for nvidia/cuda:13.0.2-base-ubuntu24.04 (base, musicnn,
#            clmr, jukebox): the same root file system with the NVIDIA container toolkit's variables;
#            no CUDA libraries (PyPI's torch brings its own), so it runs the GPU images on the CPU.
#      Both trust the host's CA certificates (those added under /usr/local/share/ca-certificates):
#      a network that re-signs TLS would otherwise make pip fail with CERTIFICATE_VERIFY_FAILED.
#
# Idempotent: each step says what it found or did; --rebuild remakes the stand-ins. Needs root
# (apt, dockerd, mmdebstrap). Build with a stand-in through the Dockerfiles' BASE_IMAGE argument:
#   docker build --build-arg BASE_IMAGE=jukemir-local/python:3.11-bookworm -f containers/chroma.Dockerfile .
# (tools/test_images.sh does this by itself.) Variables: DOCKER (the client; default /usr/bin/docker,
# the one installed with the engine: a newer client elsewhere on PATH may lack BuildKit support),
# DOCKERD_LOG (default /var/log/jukemir-dockerd.log), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOCKER="${DOCKER:-/usr/bin/docker}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/jukemir-dockerd.log}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
LOCAL_PYTHON=jukemir-local/python:3.11-bookworm
LOCAL_CUDA=jukemir-local/cuda-standin:bookworm
rebuild=0
case "${1:-}" in
  --rebuild) rebuild=1 ;;
  "") ;;
  -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "docker_setup.sh: unknown argument $1 (--rebuild, --help)" >&2; exit 2 ;;
esac

say() { echo "docker_setup: $*"; }
die() { echo "docker_setup: $*" >&2; exit 1; }

if [[ "$(id -u)" != 0 ]]; then
  die "run as root (installs packages, starts dockerd, runs mmdebstrap)"
fi

# ---------------------------------------------------------------- 1. the engine
if [[ -x /usr/sbin/dockerd && -x "$DOCKER" ]] && command -v mmdebstrap >/dev/null 2>&1; then
  say "engine: $("$DOCKER" --version) and mmdebstrap already installed"
else
  say "engine: installing docker.io and mmdebstrap from the distribution"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io mmdebstrap
  say "engine: installed $("$DOCKER" --version)"
fi

# ---------------------------------------------------------------- 2. the daemon
if "$DOCKER" info >/dev/null 2>&1; then
  say "daemon: already running ($("$DOCKER" info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
else
  say "daemon: starting dockerd in the background, log $DOCKERD_LOG"
  setsid nohup /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
  for _ in $(seq 60); do
    if "$DOCKER" info >/dev/null 2>&1; then
      break
    fi
    sleep 1
  done
  "$DOCKER" info >/dev/null 2>&1 || die "daemon: dockerd did not answer within 60 s; see $DOCKERD_LOG"
  say "daemon: running ($("$DOCKER" info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
fi

# ---------------------------------------------------------------- 3. base images
# The public defaults, read from the Dockerfiles themselves.
public_base() {
  sed -n 's/^ARG BASE_IMAGE=//p' "containers/$1.Dockerfile"
}
CPU_BASE="$(public_base chroma)"
GPU_BASE="$(public_base base)"

have_image() {
  "$DOCKER" image inspect "$1" >/dev/null 2>&1
}

# present, or pulled now (a registry may be reachable elsewhere); the pull is given 60 s
available() {
  if have_image "$1"; then
    say "base: $1 is present"
    return 0
  fi
  if timeout 60 "$DOCKER" pull --quiet "$1" >/dev/null 2>&1; then
    say "base: pulled $1"
    return 0
  fi
  say "base: $1 cannot be pulled here"
  return 1
}

need=()
if ! available "$CPU_BASE"; then need+=("$LOCAL_PYTHON"); fi
if ! available "$GPU_BASE"; then need+=("$LOCAL_CUDA"); fi
if [[ ${#need[@]} -eq 0 ]]; then
  say "done: the public base images are available; no stand-in needed"
  exit 0
fi

todo=()
for tag in "${need[@]}"; do
  if [[ "$rebuild" == 0 ]] && have_image "$tag"; then
    say "stand-in: $tag already made ($("$DOCKER" image inspect --format '{{.Created}}' "$tag")); --rebuild remakes it"
  else
    todo+=("$tag")
  fi
done

if [[ ${#todo[@]} -gt 0 ]]; then
  work="$(mktemp -d /tmp/jukemir-rootfs.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  # the host's own additions to the Debian CA list (e.g. a TLS-re-signing proxy's CA)
  mkdir -p "$work/ca"
  if [[ -d /usr/local/share/ca-certificates ]]; then
    cp -rL /usr/local/share/ca-certificates/. "$work/ca/"
  fi
  say "stand-in: mmdebstrap $SUITE (minbase + python3, python3-venv, ca-certificates; host CAs: $(find "$work/ca" -name '*.crt' | wc -l))"
  # no manuals, documentation or translations (as the public slim images); kept for later apt installs.
  # The hooks' "$1" is the root file system, expanded by mmdebstrap.
  # shellcheck disable=SC2016
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include=ca-certificates,python3,python3-venv \
    --customize-hook="cp -r '$work/ca/.' \"\$1/usr/local/share/ca-certificates/\"" \
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null 2>&1' \
    --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
    --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/opt/venv/lib/python3*/site-packages/pip/_vendor/__pycache__' \
    "$SUITE" "$work/rootfs.tar" \
    "deb $DEBIAN_MIRROR $SUITE main" \
    "deb $DEBIAN_MIRROR $SUITE-updates main" \
    "deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main"
  path=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  common=(--change "ENV PATH=$path" --change "ENV VIRTUAL_ENV=/opt/venv" --change "ENV LANG=C.UTF-8"
          --change 'CMD ["python3"]')
  for tag in "${todo[@]}"; do
    if [[ "$tag" == "$LOCAL_PYTHON" ]]; then
      "$DOCKER" import "${common[@]}" \
        --change "LABEL org.opencontainers.image.description=\"local stand-in for $CPU_BASE (tools/docker_setup.sh)\"" \
        "$work/rootfs.tar" "$tag" >/dev/null
    else
      "$DOCKER" import "${common[@]}" \
        --change "ENV NVIDIA_VISIBLE_DEVICES=all" --change "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility" \
        --change "LABEL org.opencontainers.image.description=\"local stand-in for $GPU_BASE without CUDA (tools/docker_setup.sh)\"" \
        "$work/rootfs.tar" "$tag" >/dev/null
    fi
    say "stand-in: made $tag ($("$DOCKER" image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
  done
fi

# the check that matters: pip inside the stand-in reaches the package index through this network
for tag in "${need[@]}"; do
  if "$DOCKER" run --rm "$tag" python -c \
      "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=30)" >/dev/null 2>&1; then
    say "check: $tag reaches https://pypi.org over TLS"
  else
    say "check: $tag could not open https://pypi.org/simple/pip/ (no network, or a CA the image lacks)"
  fi
done
for tag in "${need[@]}"; do
  if [[ "$tag" == "$LOCAL_PYTHON" ]]; then
    say "done: build chroma, mfcc, choi with --build-arg BASE_IMAGE=$tag (build.sh --cpu-base $tag)"
  else
    say "done: build base, musicnn, clmr, jukebox with --build-arg BASE_IMAGE=$tag (build.sh --gpu-base $tag)"
  fi
done
