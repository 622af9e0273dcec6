#!/usr/bin/env bash
# Every static check; no Docker daemon needed:
#   ruff check and ruff format --check on the Python code (settings in pyproject.toml),
#   hadolint on every Dockerfile, `docker-compose config --quiet` on docker-compose.yml,
#   `bash -n` and shellcheck on every shell script of containers/, reproduce/ and tools/.
# Needs the "lint" extra: pip install -e ".[lint]"
# Exits non-zero if any check fails (after running all of them).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

status=0
check() {
  echo "+ $*"
  "$@" || status=1
}

shopt -s nullglob
scripts=(containers/*.sh reproduce/*.sh tools/*.sh)
check ruff check --quiet .
check ruff format --check --quiet .
check hadolint containers/*.Dockerfile
check docker-compose --file docker-compose.yml config --quiet
for script in "${scripts[@]}"; do
  check bash -n "$script"
done
check shellcheck --external-sources "${scripts[@]}"
if [[ "$status" == 0 ]]; then
  echo "lint: all checks passed"
else
  echo "lint: FAILED" >&2
fi
exit "$status"
