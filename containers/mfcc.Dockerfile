# jukemir/representations_mfcc: MFCC statistics (120 floats per file, docs/fidelity/mfcc.md) of every
# file in /input, written to /output/<stem>.npy. CPU only; no weights.
#
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/wavs:/input:ro" -v "$PWD/out:/output" \
#       jukemir/representations_mfcc [--batch_size N --batch_idx I]
#
# Build from the repository root (containers/build.sh builds every image with one tag):
#   docker build -f containers/mfcc.Dockerfile -t jukemir/representations_mfcc .
# Build arguments: containers/README.md. Everything from BASE_IMAGE down to the "mfcc" section is
# the same text in chroma, mfcc and choi.Dockerfile, so those images share
# these layers; its ARG lines are the same in all seven Dockerfiles.

# The base image: BASE_IMAGE, by default the public one below. Where no registry is reachable,
# tools/docker_setup.sh makes a local stand-in (--build-arg BASE_IMAGE=jukemir-local/...).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
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
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    JUKEMIR_CACHE_DIR=/jukemir/cache \
    NUMBA_CACHE_DIR=/jukemir/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

# torch's CPU build (no CUDA libraries); every other dependency at the version the tests pass with
RUN --mount=type=bind,source=containers/constraints.txt,target=/tmp/constraints.txt \
    pip install --constraint /tmp/constraints.txt \
        --extra-index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}+cpu"

# a non-root user; any uid may run the image (--user) and write to the cache
RUN useradd --create-home --uid 1000 jukemir \
 && mkdir -p /jukemir/cache/models /jukemir/numba /input /output \
 && chown jukemir:jukemir /input /output \
 && chmod 1777 /jukemir/cache /jukemir/cache/models \
 && chmod 777 /jukemir/numba
WORKDIR /jukemir

# ---------------------------------------------------------------- mfcc
RUN --mount=type=bind,target=/src,rw \
    pip install --constraint /src/containers/constraints.txt "/src"
# librosa's numba functions, compiled now into NUMBA_CACHE_DIR rather than at every run (which
# takes 10-50 s); used where the CPU is the build machine's kind, else compiled again at run time
RUN python -c "import numpy as np; from jukemir.representations import get_representation as g; \
      g('mfcc')(np.random.default_rng(0).uniform(-1, 1, 4 * 22050).astype(np.float32))" \
 && chmod -R a+rwX /jukemir/numba

LABEL org.opencontainers.image.title="jukemir/representations_mfcc" \
      org.opencontainers.image.description="jukemir MFCC features (120-d) of every file in /input, written to /output" \
      org.opencontainers.image.licenses="MIT"
USER 1000:1000
ENTRYPOINT ["jukemir", "extract", "mfcc"]
