#!/usr/bin/env bash
# The project's test command (README): a fresh .venv with everything the tests need installed
# from the registries, ruff, then pytest. Extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --upgrade pip
# The CPU wheel of torch first, so that the project's torch>=2.4 pulls nothing more.
python -m pip install torch==2.13.0
python -m pip install -e '.[dev]'
ruff check .
lint-imports  # the dependency rules between the packages ([tool.importlinter] in pyproject.toml)
# --- deployment tooling (issue 7) ---
# tests/deploy needs: kubectl (renders Kustomize; part of this machine image), docker compose
# or docker-compose and caddy (Debian packages, installed when missing), and checkov in its own
# venv (its pinned dependencies clash with the project's). About 60 s on a fresh machine.
deploy_tools_t0=$SECONDS
deploy_apt=()
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || deploy_apt+=(docker-compose)
command -v caddy >/dev/null || deploy_apt+=(caddy)
# tests/service/viewer: the viewer in Debian's headless Chromium, driven by chromium-driver
command -v chromium >/dev/null || deploy_apt+=(chromium)
command -v chromedriver >/dev/null || deploy_apt+=(chromium-driver)
if [ ${#deploy_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deploy_apt[@]}" >/dev/null
fi
command -v kubectl >/dev/null || echo "WARNING: kubectl missing: the Kustomize tests in tests/deploy will fail" >&2
deploy_venv=.cache/deploy-tools/venv
if ! "$deploy_venv/bin/checkov" --version 2>/dev/null | grep -qx '3.3.30'; then
  python3 -m venv "$deploy_venv"
  "$deploy_venv/bin/python" -m pip install -q --upgrade pip
  "$deploy_venv/bin/python" -m pip install -q checkov==3.3.30
fi
export EITMON_CHECKOV="$PWD/$deploy_venv/bin/checkov"
echo "deployment tooling ready in $((SECONDS - deploy_tools_t0)) s"
# ---
python -m pytest "$@"
