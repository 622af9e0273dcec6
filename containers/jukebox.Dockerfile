# jukemir/representations_jukebox: Jukebox 5B features (4,800 floats per file, docs/fidelity/jukebox.md)
# of every file in /input, written to /output/<stem>.npy. Needs a GPU with >= 16 GB (--gpus all).
#
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD/wavs:/input:ro" -v "$PWD/out:/output" \
#       -v "$JUKEMIR_CACHE_DIR/models/jukebox:/jukemir/cache/models/jukebox" \
#       jukemir/representations_jukebox [--batch_size N --batch_idx I] [--precision fp32]
#
# Weights: fetched on the first run into /jukemir/cache/models/jukebox (the official files have no
# published checksum: their sha256 is recorded on first use and checked ever after; 11 GB downloaded,
# converted once into a 5 GB file of the 36 blocks used): mount a folder there, as above, to keep them.
# Or bake the converted weights into the image (about 5 GB more; the downloaded originals are deleted):
#   docker build --build-arg JUKEBOX_WEIGHTS=build -f containers/jukebox.Dockerfile -t jukemir/representations_jukebox .
# and then mount nothing over /jukemir/cache/models/jukebox.
#
# Build from the repository root (containers/build.sh builds every image with one tag):
#   docker build -f containers/jukebox.Dockerfile -t jukemir/representations_jukebox .
# Build arguments: containers/README.md. Everything from BASE_IMAGE down to the "jukebox" section is
# the same text in base, clmr, musicnn and jukebox.Dockerfile, so those images share
# these layers; its ARG lines are the same in all seven Dockerfiles.

# The base image: BASE_IMAGE, by default the public one below. Where no registry is reachable,
# tools/docker_setup.sh makes a local stand-in (--build-arg BASE_IMAGE=jukemir-local/...).
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
FROM ${BASE_IMAGE}

# torch's version, and the index of its CPU build (the CPU images' source; the GPU images take PyPI's
# CUDA build). pip's own index options pass through to every pip install when given (unset: PyPI),
# e.g. a build without internet: --build-arg PIP_FIND_LINKS=http://HOST:PORT/wheels/
# --build-arg PIP_TRUSTED_HOST=HOST --build-arg TORCH_CPU_INDEX=http://HOST:PORT/simple/
# (tools/test_images.sh). Same ARG lines, same place, in every Dockerfile.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JUKEMIR_CACHE_DIR=/jukemir/cache \
    NUMBA_CACHE_DIR=/jukemir/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

# Ubuntu's Python 3.12, in a virtual environment (PEP 668). apt packages are not pinned: Ubuntu keeps
# only the newest build in -updates/-security, so a pin would break at the next security fix.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

# PyPI's torch for Linux is the CUDA 13.0 build and brings its own CUDA libraries: hence the CUDA
# "base" image (what the NVIDIA container toolkit needs), as "runtime" would hold a second copy.
# Every other dependency at the version the tests pass with.
RUN --mount=type=bind,source=containers/constraints.txt,target=/tmp/constraints.txt \
    pip install --constraint /tmp/constraints.txt "torch==${TORCH_VERSION}"

# a non-root user, uid 1000 (Ubuntu's own "ubuntu" user removed first); any uid may run the image
# (--user) and write to the cache
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
 && useradd --create-home --uid 1000 jukemir \
 && mkdir -p /jukemir/cache/models /jukemir/numba /input /output \
 && chown jukemir:jukemir /input /output \
 && chmod 1777 /jukemir/cache /jukemir/cache/models \
 && chmod 777 /jukemir/numba
WORKDIR /jukemir

# ---------------------------------------------------------------- jukebox
RUN --mount=type=bind,target=/src,rw \
    pip install --constraint /src/containers/constraints.txt "/src"
ARG JUKEBOX_WEIGHTS=first-run
ARG JUKEMIR_MIRROR=
RUN case "$JUKEBOX_WEIGHTS" in \
      build) python -c "from jukemir.representations import get_representation as g; g('jukebox', device='cpu', precision='fp32')" \
             && rm -f /jukemir/cache/models/jukebox/5b/*.pth.tar \
             && chmod -R a+rwX /jukemir/cache/models ;; \
      first-run) ;; \
      *) echo "JUKEBOX_WEIGHTS must be first-run or build, got $JUKEBOX_WEIGHTS" >&2; exit 1 ;; \
    esac

LABEL org.opencontainers.image.title="jukemir/representations_jukebox" \
      org.opencontainers.image.description="jukemir Jukebox 5B features (4800-d) of every file in /input, written to /output" \
      org.opencontainers.image.licenses="MIT"
USER 1000:1000
ENTRYPOINT ["jukemir", "extract", "jukebox"]
