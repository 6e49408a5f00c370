#!/usr/bin/env bash
# Starts the local services pipeline-plugin uses, when they are not already answering.
#   scripts/services.sh docker       start dockerd (root) unless `docker info` answers
#   scripts/services.sh base-image   build the local Debian bookworm + python3 base image unless present
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[services]\033[0m %s\n' "$*" >&2; }

start_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "no Docker daemon answers and this is not root: start Docker Engine (sudo dockerd) and retry" >&2
    exit 3
  fi
  say "starting dockerd (log: /var/log/pipeline-plugin-dockerd.log)"
  # its own session: it outlives the shell (and process group) that started it
  setsid nohup dockerd >/var/log/pipeline-plugin-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "dockerd did not answer within 60 s; see /var/log/pipeline-plugin-dockerd.log" >&2
  tail -20 /var/log/pipeline-plugin-dockerd.log >&2 || true
  exit 3
}

build_base_image() {
  local tag="${PIPELINE_PLUGIN_BASE_IMAGE:-pipeline-plugin/base:bookworm}"
  if docker image inspect "$tag" >/dev/null 2>&1; then return 0; fi
  say "building base image $tag with debootstrap (a few minutes, once)"
  .venv/bin/pipeline-plugin base-image --tag "$tag"
}

for what in "$@"; do
  case "$what" in
    docker) start_docker ;;
    base-image) start_docker; build_base_image ;;
    *) echo "unknown service '$what'; valid: docker, base-image" >&2; exit 2 ;;
  esac
done
