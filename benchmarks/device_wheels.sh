#!/usr/bin/env bash
# Download, here, the wheels benchmarks/device_check.sh needs on a GPU machine that reaches no registry.
#
# The lent H100/H200 image (see the device tool's KINDS.md) has Python 3.12, torch, numpy, scipy,
# numba, llvmlite, scikit-learn, joblib, lazy-loader, msgpack, tqdm, safetensors, setuptools, wheel,
# requests, packaging and typing-extensions. It lacks what jukemir's audio, probe metrics and the old
# (librosa/resampy) decode path import; those are fetched here into build/device-wheels/ (ignored by
# git: build/), about 6 MB, to be carried with the call:  run(..., carry=["build/device-wheels"]).
#
#   benchmarks/device_wheels.sh            # Python 3.12 (the image's)
#   benchmarks/device_wheels.sh 3.11       # another Python
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYVER="${1:-3.12}"
DEST=build/device-wheels
# jukemir.audio (soundfile, cffi, pycparser), jukemir.probe.metrics (mir_eval, decorator),
# decode_throughput's old path: librosa and what it needs beyond the image (resampy, soxr, audioread,
# pooch, platformdirs).
WHEELS=(
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  mir_eval==0.8.2 decorator==5.3.1
  librosa==0.11.0 resampy==0.4.3 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 platformdirs==4.14.8
)
mkdir -p "$DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
ls -l "$DEST"
du -sh "$DEST"
