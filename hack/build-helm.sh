#!/usr/bin/env bash
# Build the real Helm CLI from the Go module proxy into a cache outside the repo.
#
# Idempotent: exits at once when the cached binary already reports the pinned version.
# Prints the binary's path on stdout as its last line (use: HELM=$(hack/build-helm.sh | tail -1)).
#
#   EIO_CACHE     cache root (default: ~/.cache/eio-devcluster); the binary goes to $EIO_CACHE/bin/helm
#   HELM_VERSION  module version to build (default below: the current stable major, v4)
#   GO            go binary (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.1}"
CACHE="${EIO_CACHE:-$HOME/.cache/eio-devcluster}"
BIN_DIR="$CACHE/bin"
HELM_BIN="$BIN_DIR/helm"

major="${HELM_VERSION%%.*}"   # v4.3.1 -> v4
module="helm.sh/helm/${major}"

if [[ -x "$HELM_BIN" ]] && "$HELM_BIN" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  echo "helm $HELM_VERSION already built" >&2
  echo "$HELM_BIN"
  exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "$GO" ]]; then
  echo "build-helm: no go toolchain found (set GO=)" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"
# Build into a temporary GOBIN, then move into place, so an interrupted build never leaves
# a half-written binary at the cached path.
tmp_bin="$(mktemp -d "$BIN_DIR/.helm-build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT

echo "building $module/cmd/helm@$HELM_VERSION with $("$GO" version) ..." >&2
start=$(date +%s)
# The version is stamped the way Helm's Makefile does it, so `helm version` is truthful
# (go install alone leaves it at the module's default).
CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" GOBIN="$tmp_bin" \
  "$GO" install -ldflags "-s -w -X helm.sh/helm/${major}/internal/version.version=${HELM_VERSION}" \
  "$module/cmd/helm@$HELM_VERSION"
mv -f "$tmp_bin/helm" "$HELM_BIN"
echo "built $("$HELM_BIN" version --short) in $(( $(date +%s) - start ))s" >&2
echo "$HELM_BIN"
