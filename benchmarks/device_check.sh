#!/usr/bin/env bash
# Every GPU measurement of issue 17 in one run on one GPU, in under 8 minutes; logs in one folder.
#
#   benchmarks/device_check.sh             # on the GPU machine (python3 with CUDA PyTorch)
#   benchmarks/device_check.sh --dry-run   # here, on a CPU: the same steps at tiny sizes (minutes)
#
# Logs go to $OUT if set (the device tool's folder), else build/device-logs/<time>/ (ignored by git):
#   env.log      machine, versions, the installs below
#   jukebox.log  decode (16 threads, warm), end to end run_folder (bf16, batch 8, 16 decoding threads),
#                model only for bf16, bf16+fuse, fp32, tf32 (batch 1/8/16 clips/s, TFLOP/s, share of
#                peak, peak GPU memory), fidelity of each vs fp32 (cosine, relative L2 error) at full
#                size on random weights, and the torch.profiler table of one bf16 forward by category
#   decode.log   decoding clips/s with 1 and 16 threads: jukemir.sinc vs librosa/resampy, warm
#   compile.log  bf16+fuse+compile model only (batch 16: one shape, one compilation), fidelity vs fp32
#   grid.log     probe_grid.py --paper: as many pairs of the paper grid as fit in what time is left,
#                cheapest first (the whole grid needs a longer lease: see benchmarks/README.md)
#   summary.log  each step's exit status and seconds
#
# Needs: python3 with CUDA PyTorch (the lent H100/H200 image has it, with numpy, scipy, numba, tqdm,
# scikit-learn, safetensors). The rest travels as wheels: run benchmarks/device_wheels.sh here first
# and carry build/device-wheels (about 6 MB). The project is installed with pip install -e . --no-deps
# --no-build-isolation --no-index (nothing fetched); if that fails, PYTHONPATH points at the checkout.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$PWD

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ $DRY == 1 && -x .venv/bin/python ]] && PYTHON=$REPO/.venv/bin/python
fi
LOGS="${OUT:-$REPO/build/device-logs/$(date +%Y%m%d-%H%M%S)$([[ $DRY == 1 ]] && echo -dry-run)}"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
BUDGET_S=${BUDGET_S:-$([[ $DRY == 1 ]] && echo 1800 || echo 470)}  # everything below, the installs included
START=$(date +%s)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET_S - $(elapsed))); }
# step NAME LOG MAX_SECONDS COMMAND...: run with a timeout of min(MAX, time left), log, record the status
step() {
  local name=$1 log=$2 max=$3
  shift 3
  local limit t0 status
  limit=$(left)
  ((limit > max)) && limit=$max
  if ((limit < 20)); then
    echo "$name: skipped, $(left) s of the budget left" | tee -a "$LOGS/summary.log"
    return
  fi
  echo "== $name (limit ${limit} s): $*" | tee -a "$LOGS/$log"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOGS/$log" 2>&1
  status=$?
  printf '%-8s exit %3d  %4d s  (%s)\n' "$name" "$status" $(($(date +%s) - t0)) "$*" | tee -a "$LOGS/summary.log"
}

{
  echo "device_check $([[ $DRY == 1 ]] && echo '--dry-run ')$(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  uname -a
  nproc
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$PYTHON" --version
  if [[ $DRY == 0 && -d build/device-wheels ]]; then
    echo "+ wheels from build/device-wheels -> $SCRATCH/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SCRATCH/site" \
      build/device-wheels/*.whl && export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  echo "+ pip install --no-deps --no-build-isolation --no-index -e ."
  if ! "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1; then
    echo "editable install failed: using PYTHONPATH=$REPO"
  fi
} >>"$LOGS/env.log" 2>&1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
echo "PYTHONPATH=$PYTHONPATH" >>"$LOGS/env.log"

if ! "$PYTHON" - >>"$LOGS/env.log" 2>&1 <<EOF; then
import importlib, sys
missing = []
for name in ("numpy", "scipy", "soundfile", "mir_eval", "tqdm", "torch", "jukemir"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '')} {getattr(module, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({exc})")
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
if missing:
    sys.exit("missing: " + ", ".join(missing) + " (carry build/device-wheels: benchmarks/device_wheels.sh)")
if not $DRY and not torch.cuda.is_available():
    sys.exit("no CUDA device: use --dry-run on a CPU")
EOF
  echo "environment check failed: see $LOGS/env.log" | tee -a "$LOGS/summary.log"
  tail -3 "$LOGS/env.log"
  exit 1
fi
echo "env      ok       $(elapsed) s" | tee -a "$LOGS/summary.log"

B=benchmarks
if [[ $DRY == 0 ]]; then
  step jukebox jukebox.log 200 "$PYTHON" $B/jukebox_throughput.py --modes bf16,bf16+fuse,fp32,tf32 \
    --batch-sizes 1,8,16 --batch-size 8 --workers 16 --clips 32 --fp32-clips 8 --profile \
    --features-out "$SCRATCH/features.npz"
  step decode decode.log 75 "$PYTHON" $B/decode_throughput.py --clips 32 --workers 1,16
  step compile compile.log 150 "$PYTHON" $B/jukebox_throughput.py --modes bf16+fuse+compile --batch-sizes 16 \
    --batch-size 16 --workers 16 --clips 32 --no-e2e --reference "$SCRATCH/features.npz"
  step grid grid.log $(($(left) - 10)) "$PYTHON" $B/probe_grid.py --paper --device cuda --precision bf16 \
    --budget $(($(left) - 100))
else
  step jukebox jukebox.log 400 "$PYTHON" $B/jukebox_throughput.py --tiny --modes bf16,bf16+fuse,fp32,tf32 \
    --batch-sizes 1,2 --batch-size 2 --workers 2 --clips 4 --seconds 5 --profile \
    --features-out "$SCRATCH/features.npz"
  step decode decode.log 200 "$PYTHON" $B/decode_throughput.py --clips 4 --seconds 5 --workers 1,2
  step compile compile.log 400 "$PYTHON" $B/jukebox_throughput.py --tiny --modes bf16+fuse+compile \
    --batch-sizes 2 --batch-size 2 --workers 2 --clips 2 --seconds 5 --no-e2e --reference "$SCRATCH/features.npz"
  step grid grid.log 600 "$PYTHON" $B/probe_grid.py --paper --scale 0.03 --max-steps 8 --budget 60 \
    --pairs 'gtzan_ff/chroma,magnatagatune/mfcc,giantsteps_clips/choi,emomusic/clmr'
fi
echo "total $(elapsed) s of the ${BUDGET_S} s budget; logs in $LOGS" | tee -a "$LOGS/summary.log"
