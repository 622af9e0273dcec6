# syntax=docker/dockerfile:1
# jukemir/representations_mfcc: MFCC statistics (120 floats per file, docs/fidelity/mfcc.md) of every
# file in /input, written to /output/<stem>.npy. CPU only; no weights.
#
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/wavs:/input:ro" -v "$PWD/out:/output" \
#       jukemir/representations_mfcc [--batch_size N --batch_idx I]
#
# Build from the repository root: docker build -f containers/mfcc.Dockerfile -t jukemir/representations_mfcc .
# (containers/build.sh builds every image with one tag). Everything above the "mfcc" section is the
# same text in chroma, mfcc and choi.Dockerfile, so those images share these layers.

FROM python:3.11.13-slim-bookworm

ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    JUKEMIR_CACHE_DIR=/jukemir/cache \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

# torch's CPU build (no CUDA libraries); every other dependency at the version the tests pass with
RUN --mount=type=bind,source=containers/constraints.txt,target=/tmp/constraints.txt \
    pip install --constraint /tmp/constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}+cpu"

# a non-root user; any uid may run the image (--user) and write to the cache
RUN useradd --create-home --uid 1000 jukemir \
 && mkdir -p /jukemir/cache/models /input /output \
 && chown jukemir:jukemir /input /output \
 && chmod 1777 /jukemir/cache /jukemir/cache/models
WORKDIR /jukemir

# ---------------------------------------------------------------- mfcc
RUN --mount=type=bind,target=/src,rw \
    pip install --constraint /src/containers/constraints.txt "/src"

USER 1000:1000
ENTRYPOINT ["jukemir", "extract", "mfcc"]
