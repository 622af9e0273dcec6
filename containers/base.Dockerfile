# syntax=docker/dockerfile:1
# jukemir/lib: the library container. Every stage except the per-representation extraction images:
# download, process, probe (grid-config, probe --serial or --executor ray), evaluate, report; it can
# also extract any representation natively (weights are then fetched into the mounted cache).
# reproduce/0_docker.sh starts it as the container "jukemir", with the cache mounted at /jukemir/cache:
#
#   docker run -d -it --name jukemir --gpus all --user "$(id -u):$(id -g)" \
#       -v "$JUKEMIR_CACHE_DIR:/jukemir/cache" jukemir/lib
#   docker exec -it jukemir bash reproduce/4_grid_config.sh
#
# Build from the repository root: docker build -f containers/base.Dockerfile -t jukemir/lib .
# (containers/build.sh builds every image with one tag). Everything above the "base" section is the
# same text in base, clmr, musicnn and jukebox.Dockerfile, so those images share these layers.

FROM nvidia/cuda:13.0.2-base-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JUKEMIR_CACHE_DIR=/jukemir/cache \
    NUMBA_CACHE_DIR=/tmp/numba \
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
 && mkdir -p /jukemir/cache/models /input /output \
 && chown jukemir:jukemir /input /output \
 && chmod 1777 /jukemir/cache /jukemir/cache/models
WORKDIR /jukemir

# ---------------------------------------------------------------- base
# ffmpeg, to convert audio of your own (the package decodes with libsndfile and does not need it)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,target=/src,rw \
    pip install --constraint /src/containers/constraints.txt "/src[jukebox,choi,ray]"
COPY reproduce /jukemir/reproduce
# the numbered scripts see that they run in this container (3_extract.sh then extracts natively here)
ENV JUKEMIR_IN_DOCKER=1

USER 1000:1000
CMD ["bash"]
