# jukemir/representations_musicnn: musicnn MSD_musicnn_big features (4,194 floats per file,
# docs/fidelity/musicnn.md) of every file in /input, written to /output/<stem>.npy. GPU when given
# one, else CPU. The TF checkpoint (sha256-pinned index; data file checked against its git object id)
# is downloaded and converted at build time and baked in: the image runs with --network none.
# MUSICNN_MODELS chooses the models baked (default the paper's; --model picks one at run time).
#
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD/wavs:/input:ro" -v "$PWD/out:/output" \
#       jukemir/representations_musicnn [--batch_size N --batch_idx I]
#
# Build from the repository root (containers/build.sh builds every image with one tag):
#   docker build -f containers/musicnn.Dockerfile -t jukemir/representations_musicnn .
# Build arguments: containers/README.md. Everything from BASE_IMAGE down to the "musicnn" section is
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

# ---------------------------------------------------------------- musicnn
RUN --mount=type=bind,target=/src,rw \
    pip install --constraint /src/containers/constraints.txt "/src"
# the weights of each model of MUSICNN_MODELS (space-separated; MSD_musicnn_big = the paper's,
# MSD_musicnn, MTT_musicnn), downloaded, verified and converted by the package's own code and baked
# into the image, left writable for whichever uid runs the image; --build-arg JUKEMIR_MIRROR=URL
# tries a mirror first
ARG JUKEMIR_MIRROR=
ARG MUSICNN_MODELS=MSD_musicnn_big
RUN for model in $MUSICNN_MODELS; do \
      python -c "from jukemir.representations import get_representation as g; import sys; g('musicnn', device='cpu', model=sys.argv[1])" "$model" \
      || exit 1; \
    done \
 && chmod -R a+rwX /jukemir/cache/models

LABEL org.opencontainers.image.title="jukemir/representations_musicnn" \
      org.opencontainers.image.description="jukemir musicnn MSD_musicnn_big features (4194-d) of every file in /input, written to /output" \
      org.opencontainers.image.licenses="MIT"
USER 1000:1000
ENTRYPOINT ["jukemir", "extract", "musicnn"]
