#!/usr/bin/env bash
# Copy the CRDs from crds/ (the one source) into the chart (charts/embedding-import-operator/files/crds/).
# tests/chart/test_crds.py fails when the copy drifts from the source: run this after editing crds/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/charts/embedding-import-operator/files/crds"
mkdir -p "$dest"
find "$dest" -maxdepth 1 -name '*.yaml' -delete
shopt -s nullglob
for f in "$root"/crds/*.yaml; do
  cp "$f" "$dest/"
  echo "copied crds/$(basename "$f")"
done
